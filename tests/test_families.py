"""Each model family end to end on CPU: a tiny run that learns something measurable on a toy set with a
known answer (tests/toy_data.py), its ONNX export with parity, and the commands and options around it
(`fastcycle sample`, `translate --html`, --aux-classifier, WGAN-GP, --tensorboard, --init-weights).

Architecture facts are tested in test_models_zoo.py; here the networks are trained."""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fastcycle.checkpoint import load_checkpoint
from fastcycle.cli import main
from fastcycle.config import apply_overrides
from fastcycle.errors import UserError
from fastcycle.export.backends import open_runner
from fastcycle.export.command import ExportRequest, run_export
from fastcycle.export.ort import OrtRunner
from fastcycle.export.parity import TOLERANCE
from fastcycle.noise import sample_noise
from fastcycle.presets import dcgan, pix2pix, semi_supervised
from fastcycle.sample import generate
from fastcycle.train import CycleGAN, train
from fastcycle.train.cyclegan import LOSS_NAMES
from fastcycle.train.families import build_model
from fastcycle.trained import load_generator
from fastcycle.translate import translate_folder
from tests.conftest import write_images
from tests.learning import assert_within
from tests.test_train import _batch, model_env, tiny
from tests.tolerance import cycle_step_atol
from tests.toy_data import BACKGROUND, write_discs, write_pix2pix, write_striped_domains

CPU = torch.device("cpu")
SIDE = 128  # pix2pix toy pairs: each side 128x128, the smallest input of unet_128


def _to_model(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1], as the loaders make them."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _pairs(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The (A, B) batches of a folder of A|B side-by-side images."""
    images = [_read(p) for p in sorted(folder.glob("*.png"))]
    return (
        torch.stack([_to_model(x[:, :SIDE]) for x in images]),
        torch.stack([_to_model(x[:, SIDE:]) for x in images]),
    )


@torch.no_grad()
def _l1(G: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    return (G.eval()(x) - target).abs().mean().item()


def _translate(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> int:
    """`fastcycle translate` on the CPU; its exit status."""
    argv = ["translate", "--checkpoint", str(checkpoint), "--input", str(inputs), "--output", str(out)]
    return main([*argv, "--device", "cpu", "--workers", "1", *extra])


def _untrained(cfg) -> torch.nn.Module:
    """The generator a run of cfg starts from: build_model seeds with cfg's seed, as train() does."""
    return build_model(cfg, model_env()).generator().eval()


# --- pix2pix ---------------------------------------------------------------------------------------------


def p2p_config(data: Path, out: Path, **overrides):
    """The pix2pix preset (U-Net, conditional PatchGAN, batch norm, vanilla GAN + 100 x L1), shrunk:
    unet_128 with 8 filters on the 128x128 pairs, lr 2e-3 so that 60 steps of batch 4 learn the map."""
    base = dict(
        data=str(data),
        out=str(out),
        netG="unet_128",
        ngf=8,
        ndf=8,
        preprocess="crop",
        load_size=SIDE,
        crop_size=SIDE,
        batch_size=4,
        lr=2e-3,
        n_epochs=100,
        n_epochs_decay=0,
        max_steps=60,
        log_every=10,
        num_workers=0,
        sample_every=0,
        save_every=10_000,
        device="cpu",  # the margins below were measured on CPU, which is also deterministic
    )
    return apply_overrides(pix2pix(), base | overrides)


def train_p2p(root: Path, seed: int = 0) -> SimpleNamespace:
    """A pix2pix run at `seed` on 32 toy pairs (B = colour_map(A)), and 8 held-out pairs of another seed."""
    write_pix2pix(root / "data", 32, SIDE, seed=0)
    write_pix2pix(root / "held_out", 8, SIDE, seed=1)
    cfg = p2p_config(root / "data", root / "run", seed=seed)
    result = train(cfg)
    A, B = _pairs(root / "held_out" / "train")
    inputs = root / "inputs"  # the held-out A sides as plain images, for translate
    inputs.mkdir()
    for i, a in enumerate(A):
        Image.fromarray(((a.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(inputs / f"{i}.png")
    return SimpleNamespace(root=root, cfg=cfg, run=root / "run", result=result, A=A, B=B, inputs=inputs)


@pytest.fixture(scope="module")
def p2p(tmp_path_factory):
    return train_p2p(tmp_path_factory.mktemp("pix2pix"))


def p2p_learning(p2p: SimpleNamespace) -> dict[str, float]:
    """The held-out L1 of the trained generator over an untrained one's and over the input's own (the
    colour map inverts, so the input is ~1.2 from its target), and the logged 100 x L1 at the end over
    its first value."""
    trained = _l1(load_generator(p2p.run), p2p.A, p2p.B)
    return {
        "vs_untrained": trained / _l1(_untrained(p2p.cfg), p2p.A, p2p.B),
        "vs_identity": trained / (p2p.A - p2p.B).abs().mean().item(),
        "L1_ratio": p2p.result.losses[-1]["G_L1"] / p2p.result.losses[0]["G_L1"],
    }


# Over seeds 0-4 on AVX-512 and AVX2 kernels, one and two threads (tests/margins.py; docs/testing.md):
# 0.12-0.24 of an untrained generator's L1 (sd 0.04), 0.06-0.13 of the input's (sd 0.02), the logged L1
# falling to 0.21-0.41 (sd 0.065); all three stay near 1 without learning. Each bound lies 2 sd or
# more beyond the worst of those runs.
P2P_BOUNDS = {"vs_untrained": ("<", 0.6), "vs_identity": ("<", 0.6), "L1_ratio": ("<", 0.6)}


def test_pix2pix_learns_the_paired_map_on_held_out_pairs(p2p):
    assert_within(p2p_learning(p2p), P2P_BOUNDS)


def test_pix2pix_trainA_trainB_layout_and_direction_BtoA(tmp_path):
    """Separate A and B files, and a map that is not its own inverse (B = 255 - A / 2, so A = 2 (255 - B)):
    a BtoA run must learn B -> A; had it learnt A -> B, G(B) would be 255 - B / 2, far from A."""

    def write(src: Path, dst: Path) -> None:
        for p in sorted(src.glob("*.png")):
            a = _read(p)[:, :SIDE]
            for domain, img in (("A", a), ("B", 255 - a // 2)):
                (dst / f"train{domain}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(img)).save(dst / f"train{domain}" / p.name)

    write(write_pix2pix(tmp_path / "src", 32, SIDE, seed=2) / "train", tmp_path / "data")
    write(write_pix2pix(tmp_path / "src_held", 8, SIDE, seed=3) / "train", tmp_path / "held")
    cfg = p2p_config(tmp_path / "data", tmp_path / "run", direction="BtoA")
    assert train(cfg).step == 60
    assert (
        "pix2pix data: trainA/ + trainB/ paired by file name, 32 pairs"
        in (tmp_path / "run" / "train.log").read_text()
    )
    A, B = (
        torch.stack([_to_model(_read(p)) for p in sorted((tmp_path / "held" / f"train{d}").glob("*.png"))])
        for d in "AB"
    )
    trained = _l1(load_generator(tmp_path / "run"), B, A)
    untrained = _l1(_untrained(cfg), B, A)
    identity = (A - B).abs().mean().item()
    # Measured 0.16-0.19 (seeds 0-2) against ~0.6 untrained and ~1.3 identity; 0.6x leaves room for
    # other CPUs' float rounding, which changes a GAN's trajectory like another seed does.
    assert trained < 0.6 * untrained and trained < 0.6 * identity, (trained, untrained, identity)


def test_pix2pix_onnx_export_and_translate_backends_agree(p2p, tmp_path):
    said: list[str] = []
    onnx_path = tmp_path / "p2p.onnx"
    run_export(ExportRequest(checkpoint=str(p2p.run), onnx=str(onnx_path), size=SIDE), say=said.append)
    parity = next(line for line in said if line.startswith("parity onnxruntime"))
    assert "real images" in parity and "fp32" in parity  # the run's own train/ pairs were checked too
    ort_runner = open_runner("onnxruntime", onnx_path, CPU)
    torch_runner = open_runner("torch", p2p.run, CPU)
    assert ort_runner.name == "onnxruntime" and torch_runner.name == "torch"
    for runner, out in ((ort_runner, tmp_path / "ort"), (torch_runner, tmp_path / "torch")):
        assert translate_folder(runner, p2p.inputs, out, batch_size=4, workers=1).written == len(p2p.A)
    for p in sorted(p2p.inputs.glob("*.png")):
        a = _read(tmp_path / "ort" / p.name).astype(int)
        b = _read(tmp_path / "torch" / p.name).astype(int)
        diff = np.abs(a - b)
        # Both are fp32 within TOLERANCE (1e-4 on [-1, 1], 0.013 of a uint8 level); rounding to uint8 can
        # still put a value on either side of a .5 boundary: at most one level, and rarely.
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, p.name


def test_pix2pix_translate_html_has_no_reconstruction_column(p2p, tmp_path):
    out = tmp_path / "out"
    assert _translate(p2p.run, p2p.inputs, out, "--html") == 0
    assert _gallery(out, len(p2p.A)) == ["name", "input", "output"]
    assert not (out / "reconstructed").exists()


# --- DCGAN -------------------------------------------------------------------------------------------------


def train_dc(root: Path, seed: int = 0) -> SimpleNamespace:
    """A DCGAN run at `seed` on 128 red-disc-on-blue images. The dcgan preset (vanilla GAN, batch norm,
    Adam beta1 0.5) shrunk: 16/8 filters, batch 16, lr 2e-3, 50 epochs (400 steps), real targets 0.9.
    Without the smoothing, at 8/8 filters, one seed in four stayed grey."""
    write_discs(root / "discs", 128, seed=0)
    overrides = dict(
        data=str(root / "discs"),
        out=str(root / "run"),
        ngf=16,
        ndf=8,
        batch_size=16,
        lr=2e-3,
        n_epochs=50,
        label_smoothing="0.9",
        seed=seed,
        log_every=40,
        num_workers=0,
        sample_every=0,
        save_every=10_000,
        device="cpu",  # the margins below were measured on CPU, which is also deterministic
    )
    cfg = apply_overrides(dcgan(), overrides)
    train(cfg)
    data = np.stack([_read(p) for p in sorted((root / "discs").glob("*.png"))]).reshape(-1, 3)
    return SimpleNamespace(root=root, cfg=cfg, run=root / "run", mean=data.astype(float).mean(0))


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    return train_dc(tmp_path_factory.mktemp("dcgan"))


def _colour_stats(G, data_mean: np.ndarray) -> tuple[float, float]:
    """(distance of the samples' mean colour to the data's, fraction of background-blue pixels) over
    64 samples of fixed noise."""
    px = generate(G, sample_noise(64, 100, seed=1), CPU).reshape(-1, 3).astype(float)
    blue = (np.abs(px - np.array(BACKGROUND)).max(1) < 60).mean()  # within 60 levels per channel
    return float(np.linalg.norm(px.mean(0) - data_mean)), float(blue)


def dc_learning(dc: SimpleNamespace) -> dict[str, float]:
    """The samples' distance to the data's mean colour over an untrained generator's (mid-grey, ~138
    levels away), and the fraction of background-blue pixels, before (none) and after training."""
    far, blue_before = _colour_stats(_untrained(dc.cfg), dc.mean)
    near, blue_after = _colour_stats(load_generator(dc.run), dc.mean)
    return {"colour_ratio": near / far, "blue_before": blue_before, "blue_after": blue_after}


# Over seeds 0-4 on AVX-512 and AVX2 kernels, one and two threads (tests/margins.py; docs/testing.md):
# 0.04-0.30 of the untrained distance (sd 0.07), 58-91% blue (sd 8%), where an untrained generator's
# samples are grey (1.0, no blue). Each bound lies 2 sd or more beyond the worst of those runs.
DC_BOUNDS = {"colour_ratio": ("<", 0.5), "blue_before": ("<", 0.01), "blue_after": (">", 0.3)}


def test_dcgan_learns_the_colours_of_the_data(dc):
    assert_within(dc_learning(dc), DC_BOUNDS)


def test_fastcycle_sample_grid_concepts_and_arithmetic(dc, tmp_path, capsys):
    run = ["sample", "--checkpoint", str(dc.run), "--device", "cpu"]
    grid = tmp_path / "grid.png"
    assert main([*run, "--out", str(grid), "--n", "16", "--ncol", "4"]) == 0
    assert Image.open(grid).size == (4 * 66 + 2, 4 * 66 + 2)  # 4 x 4 tiles of 64 with 2-pixel borders
    z = np.load(tmp_path / "grid.npy")
    np.testing.assert_array_equal(z, sample_noise(16, 100, seed=0))  # the noise of that grid, reusable
    picks = {"a": [0, 1, 2], "b": [3, 4], "c": [5]}
    for name, rows in picks.items():
        concept = tmp_path / f"{name}.npy"
        select = ",".join(map(str, rows))
        noise = ["--noise", str(tmp_path / "grid.npy")]
        assert main([*run, *noise, "--select", select, "--save-noise-to", str(concept)]) == 0
        np.testing.assert_array_equal(np.load(concept), z[rows])
        assert (tmp_path / f"{name}.png").is_file()  # the preview of the picked tiles
    out = tmp_path / "arith.png"
    assert main([*run, "--arith", "a - b + c", "--noise-dir", str(tmp_path), "--out", str(out)]) == 0
    want = z[[0, 1, 2]].mean(0) - z[[3, 4]].mean(0) + z[[5]].mean(0)
    # Means in float64, stored as float32: rounding only.
    np.testing.assert_allclose(np.load(tmp_path / "arith.npy")[0], want, rtol=1e-5, atol=1e-6)
    assert Image.open(out).size == ((3 + 1 + 7) * 66 + 2, 66 + 2)  # 3 terms, the result, 7 variants
    assert "wrote" in capsys.readouterr().out


def test_dcgan_onnx_export_and_its_refusals(dc, tmp_path):
    said: list[str] = []
    onnx_path = tmp_path / "dcgan.onnx"
    run_export(ExportRequest(checkpoint=str(dc.run), onnx=str(onnx_path)), say=said.append)
    assert any(line.startswith("parity onnxruntime") and "random noise" in line for line in said)
    G = load_generator(dc.run)
    z = torch.from_numpy(sample_noise(5, 100, seed=3))[:, :, None, None]
    with torch.no_grad():
        want = G(z)
    # fp32 on both sides: the parity check's own tolerance.
    assert (OrtRunner(onnx_path, CPU)(z) - want).abs().max() <= TOLERANCE["fp32"]
    for kw in ({"dynamic_hw": True}, {"trt": str(tmp_path / "g.plan")}):
        with pytest.raises(UserError, match="a DCGAN generator exports to --onnx or --safetensors"):
            run_export(ExportRequest(checkpoint=str(dc.run), onnx=str(tmp_path / "x.onnx"), **kw))


def test_translate_refuses_a_dcgan_in_one_line(dc, tmp_path, capsys):
    write_images(tmp_path / "in", 1, size=(64, 64))
    rc = _translate(dc.run, tmp_path / "in", tmp_path / "out")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fastcycle: error:")]
    assert rc == 2 and len(errors) == 1 and "`fastcycle sample`" in errors[0]
    assert not (tmp_path / "out").exists()


# --- semi-supervised CycleGAN (--aux-classifier) ------------------------------------------------------------


def semi_config(data: Path, out: Path, csvs, **overrides):
    """The semi_supervised preset (batch norm, class heads, real targets in [0.7, 1.2]) shrunk: 32x32
    stripes, 4/8 filters, batch 8, lr 1e-3."""
    base = dict(
        data=str(data),
        out=str(out),
        labels_A=str(csvs[0]),
        labels_B=str(csvs[1]),
        netG="resnet_6blocks",
        ngf=4,
        ndf=8,
        netD="n_layers",
        n_layers_D=2,
        preprocess="crop",
        load_size=32,
        crop_size=32,
        batch_size=8,
        lr=1e-3,
        n_epochs=25,
        n_epochs_decay=0,
        log_every=20,
        num_workers=0,
        sample_every=0,
        save_every=10_000,
        device="cpu",  # the margins below were measured on CPU, which is also deterministic
    )
    return apply_overrides(semi_supervised(), base | overrides)


def train_semi(root: Path, seed: int = 0) -> SimpleNamespace:
    """Stripes (class: horizontal or vertical), 32 per domain, ~40% labelled; 100 steps at `seed`."""
    csvs = write_striped_domains(root / "data", 32, 32, labelled=0.4, seed=0)
    cfg = semi_config(root / "data", root / "run", csvs, seed=seed)
    result = train(cfg)
    return SimpleNamespace(root=root, cfg=cfg, run=root / "run", result=result, csvs=csvs)


@pytest.fixture(scope="module")
def semi(tmp_path_factory):
    return train_semi(tmp_path_factory.mktemp("semi"))


def semi_learning(semi: SimpleNamespace, held_out: Path) -> dict[str, float]:
    """Each domain's class head's accuracy on 32 held-out stripes of another seed (chance: 0.5)."""
    held = write_striped_domains(held_out, 32, 32, labelled=1.0, seed=1)  # every image labelled
    unlabelled = torch.full((32,), -1)
    model = build_model(semi.cfg, model_env(), labels=(unlabelled, unlabelled), n_classes=2)
    model.load_state_dict(load_checkpoint(semi.run)["model"])
    classes = ["horizontal", "vertical"]  # sorted label names: the class indices of fastcycle.data.labels
    accuracy = {}
    for domain, csv in zip("AB", held, strict=True):
        rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
        x = torch.stack([_to_model(_read(held_out / f"train{domain}" / name)) for name, _ in rows])
        y = torch.tensor([classes.index(label) for _, label in rows])
        accuracy[f"accuracy_{domain}"] = (model.classify(domain, x).argmax(1) == y).float().mean().item()
    return accuracy


# Over seeds 0-4 on AVX-512 and AVX2 kernels, one and two threads (tests/margins.py; docs/testing.md):
# A 0.91-1.0 (sd 0.03), B 1.0 every time; chance is 0.5. The bound lies 2 sd or more below the worst.
SEMI_BOUNDS = {"accuracy_A": (">=", 0.8), "accuracy_B": (">=", 0.8)}


def test_semi_supervised_heads_classify_held_out_stripes(semi, tmp_path):
    assert_within(semi_learning(semi, tmp_path), SEMI_BOUNDS)
    last = semi.result.losses[-1]
    assert all(np.isfinite(last[k]) for k in ("cls_A", "cls_B", "G_cls"))


def test_a_missing_labels_csv_is_a_user_error(semi, tmp_path):
    cfg = semi_config(semi.root / "data", tmp_path / "run", (tmp_path / "nope.csv", semi.csvs[1]))
    with pytest.raises(UserError, match=r"labels file .*nope\.csv does not exist; fix --labels-A"):
        train(cfg)


def test_aux_classifier_without_labels_is_one_line(semi, tmp_path, capsys):
    argv = ["train", "--data", str(semi.root / "data"), "--aux-classifier", "--out", str(tmp_path / "run")]
    assert main([*argv, "--num-workers", "0", "--device", "cpu"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fastcycle: error:")]
    assert len(errors) == 1 and "--aux-classifier needs labels: pass --labels-A" in errors[0]


def test_a_batch_without_labels_has_a_zero_class_loss():
    cfg = tiny(aux_classifier=True, norm="batch")
    labels = (torch.tensor([-1, -1, 0, 1]), torch.tensor([-1, -1, 1, 0]))
    model = build_model(cfg, model_env(), labels=labels, n_classes=2)
    a, b = _batch()
    unlabelled, _ = model.train_step(a, b, torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert all(torch.isfinite(v) for v in unlabelled.values())
    assert unlabelled["cls_A"] == 0 and unlabelled["cls_B"] == 0 and unlabelled["G_cls"] == 0
    want = _class_losses(model, a, b, labels[0][2:], labels[1][2:])  # files 2 and 3 carry the labels
    labelled, _ = model.train_step(a, b, torch.tensor([2, 3]), torch.tensor([2, 3]))
    # The same fp32 ops on the same CPU; torch's mean in place of class_loss's sum / count: a rounding.
    torch.testing.assert_close({k: labelled[k] for k in want}, want)


def _class_losses(model, real_A, real_B, y_A, y_B) -> dict[str, torch.Tensor]:
    """cls_A, cls_B and G_cls as a step of `model` must find them: torch's cross-entropy of the class
    heads' logits, from copies of the networks before the step, in train mode (batch statistics) as the
    step runs them: the heads on the reals, and on each generator's fakes with its source's labels."""
    nets = {name: copy.deepcopy(net) for name, net in model.nets.items()}
    lambda_cls = model.cfg.loss.lambda_cls

    def ce(D: str, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(nets[D](images)[1], y) * lambda_cls

    with torch.no_grad():
        fake_B, fake_A = nets["G_AB"](real_A), nets["G_BA"](real_B)
        G_cls = ce("D_B", fake_B, y_A) + ce("D_A", fake_A, y_B)
        return {"cls_A": ce("D_A", real_A, y_A), "cls_B": ce("D_B", real_B, y_B), "G_cls": G_cls}


# --- WGAN-GP --------------------------------------------------------------------------------------------


def _wgangp_step(**overrides):
    model = CycleGAN(tiny(gan_mode="wgangp", **overrides), model_env())
    torch.manual_seed(1)  # the same interpolation weights in both runs
    losses, _ = model.train_step(*_batch())
    grads = {k: [p.grad.clone() for p in net.parameters()] for k, net in model.nets.items()}
    return losses, grads


def test_wgangp_penalty_is_in_the_discriminator_gradients():
    losses, grads = _wgangp_step(lambda_gp=10.0)
    half, _ = _wgangp_step(lambda_gp=5.0)
    # lambda_gp times one penalty of the same interpolates (seed 1), a mean of (|grad| - 1)^2: above 0.
    for k in ("gp_A", "gp_B"):
        assert torch.isfinite(losses[k]) and losses[k] > 0 and torch.equal(losses[k], 2 * half[k]), k
    no_gp, grads_no_gp = _wgangp_step(lambda_gp=0.0)
    assert no_gp["gp_A"] == 0 and no_gp["gp_B"] == 0
    assert torch.equal(losses["D_A"], no_gp["D_A"])  # the critic loss without the penalty is the same
    for k in ("G_AB", "G_BA"):  # the generators step first: untouched by lambda_gp
        assert all(torch.equal(a, b) for a, b in zip(grads[k], grads_no_gp[k], strict=True)), k
    for k in ("D_A", "D_B"):
        assert any(not torch.equal(a, b) for a, b in zip(grads[k], grads_no_gp[k], strict=True)), k


def test_wgangp_with_compiled_networks(aot_eager):
    """The penalty's pass (the critic's gradient with respect to its input, differentiated again)
    through compiled networks: what decides whether it works is Dynamo and AOTAutograd, which aot_eager
    runs as Inductor would; test_compile.py compiles these networks with Inductor."""
    model = CycleGAN(tiny(gan_mode="wgangp", compile=True, lambda_identity=0.0), model_env())
    before = [p.detach().clone() for p in model.nets["D_A"].parameters()]
    torch.manual_seed(1)  # the interpolation weights of _wgangp_step's eager step
    losses, _ = model.train_step(*_batch())
    eager, _ = _wgangp_step(lambda_identity=0.0)
    # AOTAutograd's traced graph may sum in another order than eager (tests/tolerance.py).
    tol = cycle_step_atol(model.nets, _batch()[0], len(eager))
    torch.testing.assert_close(losses, eager, rtol=tol, atol=tol)  # the penalties included
    assert any(not torch.equal(a, b) for a, b in zip(before, model.nets["D_A"].parameters(), strict=True))


# --- a tiny CycleGAN run: --tensorboard, plot, translate --html, --init-weights ---------------------------


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    root = tmp_path_factory.mktemp("cycle")
    write_images(root / "data" / "trainA", 4, size=(36, 36), seed=1)
    write_images(root / "data" / "trainB", 4, size=(36, 36), seed=2)
    result = train(tiny(data=str(root / "data"), out=str(root / "run"), max_steps=3, tensorboard=True))
    return SimpleNamespace(root=root, run=root / "run", result=result)


def test_tensorboard_events_hold_the_logged_losses(cycle):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((cycle.run / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(cycle.run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"loss/{k}" for k in LOSS_NAMES} | {"train/lr", "train/epoch"} <= tags
    for k in LOSS_NAMES:
        scalars = acc.Scalars(f"loss/{k}")
        assert [s.step for s in scalars] == [1, 2, 3]
        # TensorBoard stores float32: the metrics line's value to 1e-6 relative.
        assert [s.value for s in scalars] == pytest.approx([r[k] for r in cycle.result.losses], rel=1e-6), k


def test_plot_writes_loss_curves(cycle, capsys):
    assert main(["plot", str(cycle.run)]) == 0
    png = cycle.run / "loss_curves.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert str(png) in capsys.readouterr().out


def _gallery(out: Path, n_rows: int) -> list[str]:
    """Check <out>/index.html: n_rows rows, every linked file exists; returns the header cells."""
    page = (out / "index.html").read_text()
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", page).group(1)
    columns = [html.unescape(c) for c in re.findall(r"<th>(.*?)</th>", header)]
    body = page.split("<tbody>", 1)[1]
    assert body.count("<tr>") == n_rows
    links = re.findall(r'(?:href|src)="([^"]+)"', body)
    assert len(links) == 2 * n_rows * (len(columns) - 1)  # a link and a thumbnail per cell
    for link in links:
        assert (out / unquote(html.unescape(link))).is_file(), link
    return columns


def test_translate_html_shows_input_output_and_reconstruction(cycle, tmp_path):
    write_images(tmp_path / "in", 3, size=(32, 32), seed=7)
    out = tmp_path / "out"
    assert _translate(cycle.run, tmp_path / "in", out, "--html") == 0
    assert _gallery(out, 3) == ["name", "input", "output", "reconstruction"]
    assert len(list((out / "reconstructed").glob("*.png"))) == 3


def _same_weights(a: torch.nn.Module, b: dict) -> bool:
    sa = a.state_dict()
    return sa.keys() == b.keys() and all(torch.equal(sa[k], b[k]) for k in sa)


def test_init_weights_from_a_fastcycle_run(cycle):
    saved = load_checkpoint(cycle.run)["model"]["nets"]
    fresh = build_model(tiny(), model_env())
    model = build_model(tiny(init_weights=str(cycle.run)), model_env())
    for name, net in model.nets.items():
        assert _same_weights(net, saved[name]), name
        assert not _same_weights(fresh.nets[name], saved[name]), name  # 3 steps moved every network


def test_init_weights_from_a_reference_folder(tmp_path):
    source = CycleGAN(tiny(seed=5), model_env())
    # The reference names generators by their input domain (G_A: A -> B) and discriminators by the
    # generator they judge: its netD_A judges G_A's outputs, domain B images, i.e. our D_B.
    for ours, theirs in (("G_AB", "G_A"), ("G_BA", "G_B"), ("D_B", "D_A"), ("D_A", "D_B")):
        torch.save(source.nets[ours].state_dict(), tmp_path / f"latest_net_{theirs}.pth")
    model = build_model(tiny(init_weights=str(tmp_path)), model_env())
    for name, net in model.nets.items():
        assert _same_weights(net, source.nets[name].state_dict()), name
    # the two Ds differ: a swap would show
    assert not _same_weights(model.nets["D_A"], source.nets["D_B"].state_dict())


def test_init_weights_from_another_family_is_refused(cycle, dc, tmp_path):
    p2p_cfg = p2p_config(tmp_path / "data", tmp_path / "run", init_weights=str(cycle.run))
    with pytest.raises(UserError, match="it is another --model"):
        build_model(p2p_cfg, model_env())
    with pytest.raises(UserError, match="it is another --model"):
        build_model(tiny(init_weights=str(dc.run)), model_env())


def test_the_run_log_names_unmatched_pair_files_and_label_rows(tmp_path):
    """The start-up lines count unmatched files and label rows "(listed in the run log)": they are."""
    src = write_pix2pix(tmp_path / "src", 4, SIDE) / "train"
    for p in sorted(src.glob("*.png")):
        a = _read(p)
        for domain, half in (("A", a[:, :SIDE]), ("B", a[:, SIDE:])):
            (tmp_path / "pairs" / f"train{domain}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(half)).save(tmp_path / "pairs" / f"train{domain}" / p.name)
    Image.fromarray(a[:, :SIDE].copy()).save(tmp_path / "pairs" / "trainA" / "lonely.png")
    train(p2p_config(tmp_path / "pairs", tmp_path / "p2p", batch_size=2, max_steps=1))
    assert "data: unmatched trainA/lonely.png" in (tmp_path / "p2p" / "train.log").read_text()

    csvs = write_striped_domains(tmp_path / "stripes", 8, 32, labelled=1.0)
    with open(csvs[0], "a") as f:
        f.write("ghost.png,vertical\n")
    train(semi_config(tmp_path / "stripes", tmp_path / "semi", csvs, max_steps=1))
    log = (tmp_path / "semi" / "train.log").read_text()
    assert "1 label rows name no image (listed in the run log)" in log
    assert f"labels: no such image: {csvs[0]}:10: ghost.png" in log
