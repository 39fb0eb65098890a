"""torchrun with 2 CPU processes (gloo): replicas stay identical, and 2 ranks at batch b train like
one process at batch 2b."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastcycle.checkpoint import load_checkpoint
from fastcycle.train import CycleGAN
from tests.conftest import write_images
from tests.test_crash_safety import TINY_FLAGS
from tests.test_train import model_env, tiny
from tests.tolerance import cycle_step_atol
from tests.toy_data import write_discs, write_pix2pix

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd):
    env = os.environ | {"PYTHONPATH": str(ROOT)}  # the worker script imports tests.*
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _torchrun(*args, n=2):
    return _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]
    )


VARIANTS = ("cycle_gan", "aux_wgangp", "pix2pix", "dcgan")


@pytest.fixture(scope="module")
def digests(tmp_path_factory) -> dict[str, list[str]]:
    """Every variant trained by 2 ranks in one torchrun launch (tests/ddp_worker.py): {variant: digests}."""
    root = tmp_path_factory.mktemp("ddp_variants")
    unpaired = root / "unpaired"
    write_images(unpaired / "trainA", 6, seed=1)
    write_images(unpaired / "trainB", 5, seed=2, ext="jpg")
    data = {
        "cycle_gan": unpaired,
        "aux_wgangp": unpaired,
        "pix2pix": write_pix2pix(root / "pairs", 4, 32),
        "dcgan": write_discs(root / "discs", 4),
    }
    out = root / "digests.json"
    proc = _torchrun("tests/ddp_worker.py", str(out), *(f"{v}={data[v]}" for v in VARIANTS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_model_family_keeps_ranks_identical(digests, variant):
    """After training, every rank holds the same weights, bitwise, in every tensor of every network:
    the plain CycleGAN, and what else goes through DDP: class heads (tuple outputs), the WGAN-GP
    penalty pass, pix2pix's conditional D and DCGAN's noise."""
    assert len(digests[variant]) == 2 and digests[variant][0] == digests[variant][1]


# Two ranks at batch 1, two steps, a checkpoint after each (checkpoint.prev.pt holds step 1); no image
# pool, so that D's batches do not depend on the pool's random draws. TINY_FLAGS' --batch-size 2 is
# overridden by the later flag.
TWO_STEPS = ["--pool-size", "0", "--max-steps", "2", "--save-every", "1"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, Path]:
    """(the data, the run folder) of `fastcycle train` under torchrun: 2 ranks at batch 1, evaluated
    (--eval-every 1) on 2 test images per domain by rank 0 after each step, which changes no weight."""
    root = tmp_path_factory.mktemp("ddp_run")
    write_images(root / "data" / "trainA", 6, seed=1)
    write_images(root / "data" / "trainB", 5, seed=2, ext="jpg")
    write_images(root / "data" / "testA", 2, seed=3)
    write_images(root / "data" / "testB", 2, seed=4)
    flags = ["--data", str(root / "data"), *TINY_FLAGS, *TWO_STEPS, "--batch-size", "1", "--eval-every", "1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTCYCLE_CACHE", str(root / "cache"))  # the real sets' features: not in the home folder
        proc = _torchrun("-m", "fastcycle", "train", "--out", str(root / "ddp"), *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch 1 x 2 ranks" in proc.stderr and proc.stderr.count("done: 2 steps") == 1  # rank 0 logs
    return root / "data", root / "ddp"


def test_rank_0_alone_evaluates_and_no_rank_waits_forever(two_ranks):
    """Each step's evaluation once, by rank 0, between collectives the other rank went on to: no
    deadlock (the fixture's run ended), one record per evaluation, the best file whole."""
    _, ddp = two_ranks
    records = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [1, 2]
    best = load_checkpoint(ddp / "checkpoint.best.pt")
    assert best["best"]["fid_sum"] == min(r["fid_sum"] for r in records if "eval" in r)


def test_two_ranks_at_batch_1_train_like_one_process_at_batch_2(two_ranks, tmp_path):
    data, ddp = two_ranks
    flags = ["--data", str(data), *TINY_FLAGS, *TWO_STEPS, "--batch-size", "2"]
    one = _run([sys.executable, "-m", "fastcycle", "train", "--out", str(tmp_path / "one"), *flags])
    assert one.returncode == 0, one.stderr[-3000:]
    # The step-1 checkpoint (checkpoint.prev.pt): Adam's first moment is then (1 - beta1) = 0.5 x the
    # averaged gradient itself. (Later steps are no test: a GAN's step amplifies rounding chaotically,
    # and Adam turns the rounding noise of zero gradients, e.g. of conv biases before instance norm,
    # into +-lr.)
    a, b = (
        load_checkpoint(ddp / "checkpoint.prev.pt"),
        load_checkpoint(tmp_path / "one" / "checkpoint.prev.pt"),
    )
    assert a["step"] == b["step"] == 1 and a["global_batch"] == b["global_batch"] == 2
    # The same gradients averaged in another order (two half-batch sums, then the mean): the tolerance
    # of one step's gradients (tests/tolerance.py), relative to the largest. Another batch split (other
    # images, or gradients summed instead of averaged) is off by ~1e-2 or more.
    nets = CycleGAN(tiny(), model_env()).nets
    for opt in ("opt_G", "opt_D"):
        moments = [
            (sa["exp_avg"], b["model"][opt]["state"][i]["exp_avg"])
            for i, sa in a["model"][opt]["state"].items()
        ]
        scale = max(ga.abs().max().item() for ga, _ in moments)
        tol = cycle_step_atol(nets, torch.zeros(2, 3, 32, 32), sum(ga.numel() for ga, _ in moments))
        for i, (ga, gb) in enumerate(moments):
            assert (ga - gb).abs().max() <= tol * scale, (opt, i, tol * scale)


def test_a_two_rank_run_resumes_in_one_process_keeping_the_pairs_seen(two_ranks, tmp_path):
    data, ddp = two_ranks
    out = tmp_path / "run"
    shutil.copytree(ddp, out)
    flags = ["--data", str(data), "--out", str(out), *TINY_FLAGS, *TWO_STEPS[:2], "--batch-size", "1"]
    one = _run([sys.executable, "-m", "fastcycle", "train", *flags, "--max-steps", "6", "--resume"])
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resume: global batch 2 -> 1, step 2 -> 4" in one.stderr  # 4 pairs seen either way
    assert load_checkpoint(out)["step"] == 6 and load_checkpoint(out)["global_batch"] == 1
