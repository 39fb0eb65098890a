"""Bad input everywhere: fuzzed config values, unwritable or full disks, invalid checkpoint configs,
and safetensors weights that load without pickle."""

import errno

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcycle.train.checkpointer as checkpointer
from fastcycle.checkpoint import CHECKPOINT_NAME, atomic_save, load_checkpoint, save_checkpoint
from fastcycle.config import apply_overrides, field_index, validate
from fastcycle.errors import UserError
from fastcycle.export.command import ExportRequest, run_export
from fastcycle.presets import cyclegan
from fastcycle.train import train
from fastcycle.trained import load_generator
from tests.test_train import tiny

SCALARS = [st.integers(-(10**6), 10**6), st.floats(), st.text(max_size=8), st.booleans(), st.none()]
VALUES = st.one_of(*SCALARS, st.lists(st.integers(), max_size=2))
NAMES = st.sampled_from([*sorted(field_index()), "crop_sise", "lr_policy", ""])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(NAMES, VALUES, max_size=4))
def test_any_config_override_is_accepted_or_one_user_error(overrides):
    try:
        validate(apply_overrides(cyclegan(), overrides))
    except UserError as e:
        assert "\n" not in str(e) and str(e)  # one line, naming the problem


def test_an_unwritable_output_folder_is_one_clear_error(dataset, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        UserError, match=r"cannot write to .*file/run \(Not a directory\); choose a writable --out"
    ):
        train(tiny(data=str(dataset), out=str(tmp_path / "file" / "run"), max_steps=1))


def test_a_full_disk_is_refused_before_training(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpointer.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(UserError, match=r"has 0\.00 GiB free, but checkpoints need about"):
        train(tiny(data=str(dataset), out=str(tmp_path / "run"), max_steps=1))


def test_a_disk_full_at_save_time_keeps_the_last_checkpoint(dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny(data=str(dataset), out=str(out), max_steps=2, save_every=1))
    good = load_checkpoint(out)

    def full(run_dir, state):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointer, "save_checkpoint", full)
    with pytest.raises(UserError, match=r"could not write a checkpoint .*No space left on device.*intact"):
        train(tiny(data=str(dataset), out=str(out), max_steps=4, save_every=1, resume=True))
    assert load_checkpoint(out)["step"] == good["step"] == 2


def test_a_checkpoint_with_an_invalid_config_is_refused(dataset, tmp_path):
    out = tmp_path / "run"
    train(tiny(data=str(dataset), out=str(out), max_steps=1))
    state = load_checkpoint(out)
    state["config"]["data"]["crop_size"] = -4
    save_checkpoint(out, {k: v for k, v in state.items() if k not in ("format", "version")})
    with pytest.raises(UserError, match="holds an invalid config: --crop-size must be positive"):
        train(tiny(data=str(dataset), out=str(out), max_steps=2, resume=True))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / CHECKPOINT_NAME
    atomic_save({"format": "fastcycle-checkpoint", "x": Evil()}, path)
    with pytest.raises(
        UserError, match=r"was refused: it would import (builtins\.)?print, and fastcycle loads only"
    ):
        load_checkpoint(path)


def test_safetensors_weights_round_trip_without_pickle(dataset, tmp_path):
    train(tiny(data=str(dataset), out=str(tmp_path / "run"), max_steps=1))
    said = []
    run_export(
        ExportRequest(str(tmp_path / "run"), safetensors=str(tmp_path / "g.safetensors")), say=said.append
    )
    assert said == [f"wrote {tmp_path / 'g.safetensors'} (safetensors weights, read back identical)"]
    a, b = load_generator(tmp_path / "run"), load_generator(tmp_path / "g.safetensors")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="is not a readable safetensors file"):
        load_generator(tmp_path / "bad.safetensors")


TOKENS = st.sampled_from(
    ["--crop-size", "--lr", "--netG", "--loader", "--norm", "--resume", "-x", "--", "=", "train"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(TOKENS, st.text(max_size=6)), max_size=6))
def test_any_command_line_parses_or_gives_one_user_error(argv):
    from fastcycle.cli import _parse, build_parser

    try:
        args = _parse(build_parser(), ["train", *argv])
        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "preset")}
        validate(apply_overrides(cyclegan(), overrides))
    except UserError as e:
        assert "\n" not in str(e) and str(e)


def test_translate_outputs_stay_inside_the_output_folder_whatever_the_names(tmp_path):
    from fastcycle.models import build_generator
    from fastcycle.runner import TorchRunner
    from fastcycle.translate import translate_folder
    from tests.conftest import write_images

    outside = tmp_path / "outside"
    write_images(outside, 1, size=(16, 16))
    src = tmp_path / "in"
    write_images(src / "weird name\\n ü", 1, size=(16, 16))
    (src / "link").symlink_to(outside, target_is_directory=True)  # a folder that points elsewhere
    net = build_generator("resnet_6blocks", ngf=4).eval()
    report = translate_folder(
        TorchRunner(net, torch.device("cpu")), src, tmp_path / "out", batch_size=2, workers=1
    )
    written = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert report.written == len(written) >= 1
    assert all((tmp_path / "out") in p.resolve().parents for p in written)
    assert sorted(p.name for p in outside.iterdir()) == ["img_000.png"]  # nothing written outside
