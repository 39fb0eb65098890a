import re

import pytest

from fastcycle.config import TrainConfig, apply_overrides, validate
from fastcycle.errors import UserError
from fastcycle.presets import PRESETS, cyclegan


def test_defaults_are_the_papers():
    cfg = cyclegan()
    assert (cfg.model.netG, cfg.model.netD, cfg.model.ngf, cfg.model.ndf) == (
        "resnet_9blocks",
        "basic",
        64,
        64,
    )
    assert (cfg.loss.gan_mode, cfg.loss.lambda_A, cfg.loss.lambda_B, cfg.loss.lambda_identity) == (
        "lsgan",
        10,
        10,
        0.5,
    )
    assert (cfg.loss.pool_size, cfg.optim.lr, cfg.optim.beta1) == (50, 2e-4, 0.5)
    assert (cfg.optim.n_epochs, cfg.optim.n_epochs_decay, cfg.optim.batch_size) == (100, 100, 1)
    assert (cfg.data.preprocess, cfg.data.load_size, cfg.data.crop_size) == ("resize_and_crop", 286, 256)
    assert (cfg.model.norm, cfg.model.init_type, cfg.model.init_gain, cfg.model.dropout) == (
        "instance",
        "normal",
        0.02,
        False,
    )


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_validate_and_round_trip(preset):
    cfg = validate(_as_trained(PRESETS[preset]()))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ("pix2pix", "--model pix2pix has no built-in demo: pass --data DIR (a train/ folder of A|B images)"),
        ("dcgan", "--model dcgan has no built-in demo: pass --data DIR (a folder of images)"),
        ("semi_supervised", "--aux-classifier needs labels: pass --labels-A and/or --labels-B"),
    ],
)
def test_what_a_preset_leaves_to_the_user_is_asked_for(preset, message):
    with pytest.raises(UserError, match=re.escape(message)):
        validate(PRESETS[preset]())


def test_overrides_set_fields_and_coerce_ints_to_floats():
    cfg = apply_overrides(cyclegan(), {"lambda_A": 5, "crop_size": 128, "amp": True})
    assert cfg.loss.lambda_A == 5.0 and isinstance(cfg.loss.lambda_A, float)
    assert cfg.data.crop_size == 128 and cfg.runtime.amp is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lamda_A": 1.0}, r"unknown option --lamda-A; did you mean --lambda-A\?"),
        ({"crop_size": "big"}, "--crop-size expects int"),
        ({"amp": 1}, "--amp expects bool"),
        ({"crop_size": 300}, "--crop-size 300 is larger than --load-size 286"),
        ({"crop_size": 254, "load_size": 300}, "not a multiple of 4"),
        ({"batch_size": 0}, "--batch-size must be positive"),
        ({"lambda_identity": -1.0}, "--lambda-identity must be >= 0"),
        ({"norm": "layer"}, "--norm 'layer' is not one of"),
        ({"beta1": 1.0}, r"--beta1 must be in \[0, 1\)"),
        ({"lr": float("nan")}, "--lr must be a finite number"),
    ],
)
def test_bad_values_get_one_clear_message(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(apply_overrides(cyclegan(), overrides))


def test_from_dict_rejects_unknown_sections_and_keys():
    d = cyclegan().to_dict()
    with pytest.raises(UserError, match="unknown config section"):
        TrainConfig.from_dict({**d, "extra": {}})
    d["model"]["ngf_typo"] = 3
    with pytest.raises(UserError, match="unknown option --ngf-typo"):
        TrainConfig.from_dict(d)


@pytest.mark.parametrize(
    ("section", "name", "home"),
    [("model", "lr", "optim"), ("run", "ngf", "model"), ("data", "seed", "runtime")],
)
def test_from_dict_refuses_a_key_in_another_section(section, name, home):
    d = cyclegan().to_dict()
    d[section][name] = d[home].pop(name)  # a checkpoint written by hand, or by another tool
    with pytest.raises(
        UserError, match=rf"{section}\.{name} is misplaced: .* belongs in the {home} section"
    ) as e:
        TrainConfig.from_dict(d)
    assert "\n" not in str(e.value)


def _as_trained(cfg: TrainConfig) -> TrainConfig:
    """A preset as a run trains it: with the dataset (and labels) it leaves to the user."""
    if cfg.model.model != "cycle_gan":  # only CycleGAN has a built-in dataset
        cfg.data.data = "datasets/x"
    if cfg.model.aux_classifier:  # semi_supervised: the labels are the user's
        cfg.data.labels_A = "labels_A.csv"
    return cfg


def test_checkpoint_configs_of_every_preset_still_load():
    for make in PRESETS.values():  # what to_dict() writes into every checkpoint, and an older subset of it
        d = _as_trained(make()).to_dict()
        assert TrainConfig.from_dict(d) == _as_trained(make())
        del d["run"]["tensorboard"], d["optim"]["lr_policy"]  # options added after the first checkpoints
        assert TrainConfig.from_dict(d).optim.lr_policy == "linear"


def test_a_cli_train_validates_its_config_once(dataset, tmp_path, monkeypatch):
    import fastcycle.config as config
    from fastcycle.cli import main

    calls = []
    real = config._validate_model
    monkeypatch.setattr(config, "_validate_model", lambda cfg: calls.append(cfg) or real(cfg))
    flags = (
        "--netG resnet_6blocks --ngf 4 --ndf 4 --netD n_layers --n-layers-D 2 --load-size 36 --crop-size 32"
    )
    argv = ["train", "--data", str(dataset), "--out", str(tmp_path / "run"), "--max-steps", "1"]
    assert main([*argv, *flags.split(), "--num-workers", "0", "--device", "cpu", "--loader", "torch"]) == 0
    assert len(calls) == 1
