"""The built-in demo: real photo tiles, a known A -> B map f, and a trained G_AB measurably close to f."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastcycle.config import apply_overrides
from fastcycle.data import demo as demo_data
from fastcycle.data.plan import steps_per_epoch
from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.presets import demo
from fastcycle.quality.distances import compare
from fastcycle.quality.features import inception_features
from fastcycle.quality.realsets import images_in, read_images, real_features
from fastcycle.quality.weights import find, load_inception
from fastcycle.train import CycleGAN, train
from fastcycle.trained import load_generator
from tests.learning import assert_within
from tests.test_train import model_env

CPU = torch.device("cpu")


def test_demo_dataset_is_disjoint_tiles_with_f_as_ground_truth(tmp_path):
    root = demo_data.build(tmp_path / "demo")
    counts = {d: len(list((root / d).glob("*.png"))) for d in ("trainA", "trainB", "testA", "testB")}
    assert counts["trainA"] > 60 and counts["trainB"] > 60 and counts["testA"] == counts["testB"] > 30
    names = {d: {p.name for p in (root / d).iterdir()} for d in ("trainA", "trainB", "testA")}
    assert not names["trainA"] & names["trainB"] and not names["testA"] & (names["trainA"] | names["trainB"])
    name = sorted(names["testA"])[0]
    a = np.asarray(Image.open(root / "testA" / name))
    assert a.shape == (demo_data.TILE, demo_data.TILE, 3)
    assert np.array_equal(np.asarray(Image.open(root / "testB" / name)), demo_data.f(a))
    assert demo_data.build(root) == root  # a second call reuses the folder


def test_f_is_a_strong_monotone_colour_grade():
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # (256, 3) greys
    out = demo_data.f(ramp).astype(int)
    assert (np.diff(out, axis=0) >= 0).all()  # monotone per channel: invertible up to rounding
    assert out[128, 0] > 170 and abs(out[128, 1] - 128) <= 1 and out[128, 2] < 70  # warm: R up, B down


# The quickstart's promise: the demo trains in minutes on any 2-core CPU. The slowest it serves has AVX2 and
# no native bf16 (many laptops), where `--amp` stays fp32 and the demo trains at 1.4 steps/s (measured).
AVX2_STEPS_PER_S = 1.4
QUICKSTART_BUDGET_S = 6 * 60 - 20  # less start-up, the demo data, checkpoints and the evaluation (~8 s)


def test_the_demo_schedule_trains_within_the_quickstart_budget_on_a_2_core_avx2_cpu(tmp_path):
    root, optim = demo_data.build(tmp_path / "demo"), demo().optim
    pairs = max(len(list((root / d).glob("*.png"))) for d in ("trainA", "trainB"))
    steps = (optim.n_epochs + optim.n_epochs_decay) * steps_per_epoch(pairs, optim.batch_size)
    assert steps / AVX2_STEPS_PER_S <= QUICKSTART_BUDGET_S, steps


def short_demo_run(out: Path, seed: int = 0) -> dict[str, float]:
    """The demo preset (identity loss on, as in the paper) with a 132-step schedule (3 epochs + 3 of
    decay) instead of 396, and no EMA (an EMA of decay 0.99 averages the last ~100 steps, which in so
    short a run still include the untrained weights), at `seed`: the held-out PSNR against f of the
    input itself (doing nothing, 17.0 dB), of the untrained generator and of the trained one."""
    overrides = dict(out=str(out), n_epochs=3, n_epochs_decay=3, ema_decay=0.0, sample_every=0, seed=seed)
    overrides["report_fid"] = False  # PSNR against f is what these bounds are about
    cfg = apply_overrides(demo(), overrides)
    translated, untranslated = train(cfg).demo_psnr
    untrained = CycleGAN(cfg, model_env())
    before, _ = demo_data.evaluate(untrained.generator("AtoB"), out / "demo_data", CPU)
    return {
        "untranslated_db": untranslated,
        "gain_db": translated - untranslated,
        "untrained_gain_db": before - untranslated,
    }


# Over seeds 0-4 on AVX-512 and AVX2 kernels, one and two threads (tests/margins.py; docs/testing.md):
# 3.6-5.6 dB above doing nothing (sd 0.52); an untrained generator scores 6.8 dB below it. The bound lies
# 2 sd beyond the worst of those runs and 2 dB clear of doing nothing.
DEMO_BOUNDS = {"untranslated_db": ("~", 17.0), "gain_db": (">=", 2.0), "untrained_gain_db": ("<", 0.0)}


@pytest.mark.slow
def test_a_short_demo_run_beats_doing_nothing(tmp_path):
    # About 35 s on 2 cores.
    assert_within(short_demo_run(tmp_path / "run"), DEMO_BOUNDS)


@pytest.mark.parametrize("netG", ["unet_128", "unet_256"])
def test_evaluate_pads_the_tiles_to_the_generators_multiple(tmp_path, netG):
    """The 80x80 held-out tiles go through a U-Net that needs multiples of 128 or 256: padded, cropped."""
    from fastcycle.models import build_generator

    root = demo_data.build(tmp_path / "demo")
    G = build_generator(netG, ngf=2, norm="batch")
    translated, untranslated = demo_data.evaluate(G, root, CPU)
    assert np.isfinite(translated) and 0 < translated < untranslated == pytest.approx(17.0, abs=0.1)


def test_unet_128_demo_run_ends_with_its_psnr_line(tmp_path):
    """`fastcycle train --netG unet_128 --netD pixel --crop-size 128 --load-size 143` (no --data) used to
    train, save, then die in the demo's evaluation; as a user runs it, at a tiny width."""
    import subprocess
    import sys

    flags = "--netG unet_128 --netD pixel --crop-size 128 --load-size 143 --ngf 2 --ndf 2 --max-steps 2"
    flags += " --no-report-fid"  # the FID lines: check_printed_quality, on test_distill.py's demo teacher
    proc = subprocess.run(
        [sys.executable, "-m", "fastcycle", "train", *flags.split(), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.startswith("PSNR G_AB(a) vs f(a): ")


# ---- FID and KID ---------------------------------------------------------------------------------

QUALITY_LINE = re.compile(
    r"^(?P<label>.+): FID (?P<fid>-?[\d.]+) \| KID (?P<kid>-?[\d.]+) \+- (?P<std>[\d.]+) x 1e-3 \| "
    r"(?P<fake>\d+) vs (?P<real>\d+) images$"
)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return demo_data.build(tmp_path_factory.mktemp("demo") / "demo")


@pytest.mark.parametrize("nc", [3, 1])
def test_the_true_map_scores_fid_zero_and_doing_nothing_does_not(demo_root, nc):
    """A perfect G_AB (its output f(a) itself) against testB: FID 0, whether the real side comes from
    testB's files through the cache (RGB) or from the converted tiles (gray); testA itself scores far
    from 0. The first 6 tiles: the claim holds for any set, and 18 Inception passes cost ~2 s."""
    held = demo_data.held_out(demo_root, nc, nc)
    fields = ("a", "fa", "a_out", "paths_A", "paths_B")
    held = dataclasses.replace(held, **{k: getattr(held, k)[:6] for k in fields})
    q = demo_data.fid_scores(held, held.fa, CPU)
    assert (q.translated.n_fake, q.translated.n_real, q.untranslated.n_fake) == (6, 6, 6)
    assert abs(q.translated.fid) < 1e-6  # the same features on both sides: float64 rounding only
    assert q.untranslated.fid > 1.0  # other images (f recolours every tile): far above that rounding


def check_printed_quality(lines: list[str], run: Path) -> None:
    """A demo run's last printed lines: after the PSNR line, FID and KID of G_AB(testA) and of testA
    against testB, finite, and the numbers fastcycle.quality gives on the run's G_AB (as saved at its
    last step, which a run without EMA evaluated) translating testA here. tests/test_distill.py's
    demo teacher is such a run (one demo run serves both tests: ~40 s of Inception on one core)."""
    assert lines[0].startswith("PSNR G_AB(a) vs f(a): ") and len(lines) == 3, lines
    printed = {m["label"]: m for m in map(QUALITY_LINE.match, lines[1:])}
    assert set(printed) == {"G_AB(testA) vs testB", "untranslated testA vs testB"}, lines
    paths_A, paths_B = images_in(run / "demo_data" / "testA"), images_in(run / "demo_data" / "testB")
    G = load_generator(run).eval()
    a = torch.from_numpy(np.stack(list(read_images(paths_A)))).permute(0, 3, 1, 2)
    with torch.no_grad():  # 16 at a time, as the run's evaluation batches them: the same float sums
        fake = torch.cat([to_uint8(G(to_model_range(x))) for x in a.split(16)])
    weights = find()
    net = load_inception(weights.path)
    # testA's and testB's features as real_features computes them from those files (the run's cached
    # entries: fastcycle.quality keys them by the files' content; test_quality.py tests the cache).
    (real, _), (base, _) = (real_features(p, net, weights.sha256) for p in (paths_B, paths_A))
    fake_features = inception_features([x.permute(1, 2, 0).numpy() for x in fake], net)
    for label, want in (
        ("G_AB(testA) vs testB", compare(fake_features, real)),
        ("untranslated testA vs testB", compare(base, real)),
    ):
        got = printed[label]
        assert np.isfinite(want.fid) and int(got["fake"]) == int(got["real"]) == len(paths_A)
        # Printed to 3 decimals (KID x 1e3): half a unit in the last place.
        assert abs(float(got["fid"]) - want.fid) <= 5e-4 + 1e-9, (label, got["fid"], want.fid)
        assert abs(float(got["kid"]) - want.kid * 1e3) <= 5e-4 + 1e-9, (label, got["kid"], want.kid)
