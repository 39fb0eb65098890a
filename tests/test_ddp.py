"""torchrun with 2 CPU processes (gloo): replicas stay identical, and 2 ranks at batch b train like
one process at batch 2b."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fastcycle.checkpoint import load_checkpoint
from tests.test_crash_safety import TINY_FLAGS
from tests.toy_data import write_discs, write_pix2pix

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd):
    env = os.environ | {"PYTHONPATH": str(ROOT)}  # the worker script imports tests.*
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _torchrun(*args, n=2):
    return _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]
    )


def test_ranks_hold_identical_parameters_after_training(dataset, tmp_path):
    out = tmp_path / "digests.json"
    proc = _torchrun("tests/ddp_worker.py", str(out), str(dataset))
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = json.loads(out.read_text())
    assert len(digests) == 2 and digests[0] == digests[1]  # bitwise equal, every tensor of every network


@pytest.mark.parametrize("variant", ["aux_wgangp", "pix2pix", "dcgan"])
def test_other_model_families_keep_ranks_identical(dataset, tmp_path, variant):
    """Class heads (tuple outputs), the WGAN-GP penalty pass, pix2pix's conditional D and DCGAN's
    noise all go through DDP; every rank must end with the same weights."""
    data = dataset
    if variant == "pix2pix":
        data = write_pix2pix(tmp_path / "pairs", 4, 32)
    elif variant == "dcgan":
        data = write_discs(tmp_path / "discs", 4)
    out = tmp_path / "digests.json"
    proc = _torchrun("tests/ddp_worker.py", str(out), str(data), variant)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = json.loads(out.read_text())
    assert len(digests) == 2 and digests[0] == digests[1]


def test_two_ranks_at_batch_1_train_like_one_process_at_batch_2(dataset, tmp_path):
    # TINY_FLAGS' --batch-size 2 is overridden by the later flag in each run.
    flags = ["--data", str(dataset), *TINY_FLAGS, *shlex.split("--pool-size 0 --max-steps 2 --save-every 1")]
    two = _torchrun("-m", "fastcycle", "train", "--out", str(tmp_path / "ddp"), *flags, "--batch-size", "1")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "batch 1 x 2 ranks" in two.stderr and two.stderr.count("done: 2 steps") == 1  # rank 0 logs
    one = _run(
        [
            sys.executable,
            "-m",
            "fastcycle",
            "train",
            "--out",
            str(tmp_path / "one"),
            *flags,
            "--batch-size",
            "2",
        ]
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # The step-1 checkpoint (checkpoint.prev.pt): Adam's first moment is then (1 - beta1) = 0.5 x the
    # averaged gradient itself. (Later steps are no test: a GAN's step amplifies rounding chaotically,
    # and Adam turns the rounding noise of zero gradients, e.g. of conv biases before instance norm,
    # into +-lr.)
    a, b = (
        load_checkpoint(tmp_path / "ddp" / "checkpoint.prev.pt"),
        load_checkpoint(tmp_path / "one" / "checkpoint.prev.pt"),
    )
    assert a["step"] == b["step"] == 1 and a["global_batch"] == b["global_batch"] == 2
    for opt in ("opt_G", "opt_D"):
        for i, sa in a["model"][opt]["state"].items():
            ga, gb = sa["exp_avg"], b["model"][opt]["state"][i]["exp_avg"]
            # Gradients of order 0.1-1 averaged in another order: observed 2.3e-6 apart. Another batch
            # split (other images, or gradients summed instead of averaged) is off by ~1e-2 or more.
            assert (ga - gb).abs().max() <= 2e-5, (opt, i)


def test_a_two_rank_run_resumes_in_one_process_keeping_the_pairs_seen(dataset, tmp_path):
    out = str(tmp_path / "run")
    flags = ["--data", str(dataset), "--out", out, *TINY_FLAGS, "--batch-size", "1"]
    two = _torchrun("-m", "fastcycle", "train", *flags, "--max-steps", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    one = _run([sys.executable, "-m", "fastcycle", "train", *flags, "--max-steps", "6", "--resume"])
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resume: global batch 2 -> 1, step 2 -> 4" in one.stderr  # 4 pairs seen either way
    assert load_checkpoint(out)["step"] == 6 and load_checkpoint(out)["global_batch"] == 1
