"""Crash safety: checksummed checkpoints with a fallback, graceful SIGINT/SIGTERM, SIGKILL at random
moments, and the non-finite step guard."""

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastcycle.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint, newest_checkpoint
from fastcycle.errors import UserError
from fastcycle.train import CycleGAN, train
from tests.test_train import model_env, tiny

CPU = torch.device("cpu")
TINY_FLAGS = shlex.split(
    "--netG resnet_6blocks --ngf 4 --ndf 4 --netD n_layers --n-layers-D 2 --load-size 36 --crop-size 32 "
    "--batch-size 2 --n-epochs 8 --n-epochs-decay 0 --num-workers 0 --sample-every 0 --log-every 1 "
    "--loader torch --device cpu"
)


def _cli(data, out, *extra):
    cmd = [sys.executable, "-m", "fastcycle", "train", "--data", str(data), "--out", str(out), *TINY_FLAGS]
    return cmd + list(extra)


def _weights(path):
    return load_checkpoint(path)["model"]["nets"]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(dataset, tmp_path):
    out = tmp_path / "run"
    train(tiny(data=str(dataset), out=str(out), max_steps=4, save_every=2))
    assert load_checkpoint(out / PREVIOUS_NAME)["step"] == 3  # the epoch-end save before step 4's
    newest = out / CHECKPOINT_NAME
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2  # inside some tensor's bytes: the zip still opens, the digest does not match
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    newest.write_bytes(bytes(data))
    with pytest.raises(UserError, match="is damaged: its contents do not match the checksum"):
        load_checkpoint(newest)
    said = []
    assert newest_checkpoint(out, say=said.append)["step"] == 3
    assert (
        said[0].startswith("checkpoint: skipping")
        and said[1] == "checkpoint: resuming from checkpoint.prev.pt (step 3)"
    )
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    assert newest_checkpoint(out, say=said.append)["step"] == 3
    resumed = train(tiny(data=str(dataset), out=str(out), max_steps=6, save_every=2, resume=True))
    assert [r["step"] for r in resumed.losses] == [4, 5, 6]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_saves_and_exits_0(dataset, tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(dataset, out, "--save-every", "1000"), stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    step = load_checkpoint(out)["step"]
    assert f"stopped by {sig.name} after step {step}, checkpoint saved; continue with --resume" in err
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert logged[-1] == step  # nothing trained after the save is lost


def _last_logged_step(out) -> int:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return max([json.loads(line)["step"] for line in lines if line.endswith("}")] or [0])


def test_sigkill_at_random_moments_never_loses_a_checkpoint_or_more_than_a_cadence(dataset, tmp_path):
    # 120 steps (40 epochs of 3), a checkpoint every 2: killed 20 times, resumed each time. Most kills
    # wait for 1-4 new steps, mostly past a save point (waiting on progress, not on a clock: start-up
    # takes seconds, more on a loaded CI machine), then a fraction of a step; one in five lands during
    # start-up instead.
    out, rng, kills, checkpoints_seen = tmp_path / "run", random.Random(0), 0, set()
    extra = ["--save-every", "2", "--n-epochs", "40"]
    while kills < 20:
        has_checkpoint = (out / CHECKPOINT_NAME).exists() or (out / PREVIOUS_NAME).exists()
        start = newest_checkpoint(out, say=lambda _: None)["step"] if has_checkpoint else 0
        resume = ["--resume"] if has_checkpoint else []
        proc = subprocess.Popen(_cli(dataset, out, *extra, *resume), stderr=subprocess.DEVNULL)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.3, 2.0))
        else:
            target, deadline = start + rng.randint(1, 4), time.time() + 300
            while _last_logged_step(out) < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.05))  # a step takes ~0.02-0.1 s here
        assert proc.poll() is None, "the run finished before 20 kills: give it more steps"
        proc.kill()
        proc.wait()
        kills += 1
        if (out / CHECKPOINT_NAME).exists() or (out / PREVIOUS_NAME).exists():
            state = newest_checkpoint(out, say=lambda _: None)  # never unreadable
            assert _last_logged_step(out) - state["step"] <= 2  # at most one cadence of steps lost
            checkpoints_seen.add(state["step"])
    done = subprocess.run(_cli(dataset, out, *extra, "--resume"), stderr=subprocess.DEVNULL, timeout=600)
    assert done.returncode == 0 and load_checkpoint(out)["step"] == 120
    assert len(checkpoints_seen) >= 5  # the kills landed mid-training, at many points, not only at start-up
    straight = tmp_path / "straight"
    subprocess.run(_cli(dataset, straight, *extra), check=True, stderr=subprocess.DEVNULL)
    a, b = _weights(out), _weights(straight)
    for name in a:  # resume is exact: the same weights as one uninterrupted run, bitwise on CPU
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)


def test_a_non_finite_step_is_skipped_and_logged(dataset, tmp_path, capsys, monkeypatch):
    model = CycleGAN(tiny(), model_env())
    x = [torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(2)]
    _, skipped = model.train_step(*x)
    assert not skipped
    before = {k: [p.clone() for p in net.parameters()] for k, net in model.nets.items()}
    bad = x[0].clone()
    bad[0, 0, 0, 0] = float("nan")
    _, skipped = model.train_step(bad, x[1])
    assert skipped
    for k, net in model.nets.items():  # neither the generators' nor the discriminators' step applied
        assert all(torch.equal(a, b) for a, b in zip(before[k], net.parameters(), strict=True)), k
    assert torch.isfinite(model.pool_B.images[: model.pool_B.num_imgs]).all()  # no NaN fake kept for later
    _, skipped = model.train_step(*x)
    assert not skipped

    # In a run: a NaN image in every batch of steps 2..3 is skipped and named; a run of them stops it.
    real_step = CycleGAN.train_step
    calls = {"n": 0}

    def poisoned(self, real_A, real_B, *indices, bad_steps=(2, 3)):
        calls["n"] += 1
        if calls["n"] in bad_steps:
            real_A = real_A.clone()
            real_A[:, :, 0, 0] = float("nan")
        return real_step(self, real_A, real_B, *indices)

    monkeypatch.setattr(CycleGAN, "train_step", poisoned)
    train(tiny(data=str(dataset), out=str(tmp_path / "run"), max_steps=5))
    err = capsys.readouterr().err
    assert "skipped 1 step(s) with a non-finite loss or gradient, weights unchanged: 2" in err
    assert "skipped 1 step(s) with a non-finite loss or gradient, weights unchanged: 3" in err

    calls["n"] = 0
    monkeypatch.setattr(
        CycleGAN, "train_step", lambda self, a, b, *i: poisoned(self, a, b, *i, bad_steps=range(1, 100))
    )
    cfg = tiny(data=str(dataset), out=str(tmp_path / "run2"), max_steps=40, n_epochs=20)
    with pytest.raises(UserError, match=r"training diverged: 25 consecutive steps up to 25 had non-finite"):
        train(cfg)


def test_stale_temporary_files_do_not_stop_a_resume(dataset, tmp_path):
    out = tmp_path / "run"
    train(tiny(data=str(dataset), out=str(out), max_steps=2))
    (out / f".{CHECKPOINT_NAME}.1.1.tmp").write_bytes(b"half a checkpoint")  # a kill mid-save
    resumed = train(tiny(data=str(dataset), out=str(out), max_steps=3, resume=True))
    assert resumed.step == 3 and os.path.getsize(out / CHECKPOINT_NAME) > 1000
