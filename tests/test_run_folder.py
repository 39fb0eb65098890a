"""A run folder has one writer: the run lock (a second run refused at once, a SIGKILLed run's folder
taken over at once) and `--resume auto` (one command for every start of a requeued job)."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from fastcycle.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint
from fastcycle.cli import main
from fastcycle.train.runlock import LOCK_NAME, RunLock
from tests.conftest import write_images
from tests.test_crash_safety import TINY_FLAGS, _cli


def _train(capfd, data, out, *extra) -> tuple[int, str]:
    code = main(["train", "--data", str(data), "--out", str(out), *TINY_FLAGS, *extra])
    return code, capfd.readouterr().err


def _log_lines(out) -> list[str]:
    return [line.split(" ", 2)[2] for line in (out / "train.log").read_text().splitlines()]


def _steps(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _wait_for(predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _one_error_line(err: str, pattern: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastcycle: error: "), err  # no traceback
    assert pattern in lines[0], lines[0]
    return lines[0]


def test_resume_auto_starts_fresh_then_resumes(dataset, tmp_path, capfd):
    out = tmp_path / "run"
    code, _ = _train(capfd, dataset, out, "--resume", "auto", "--max-steps", "2")
    assert code == 0 and _log_lines(out)[0] == f"resume auto: starting a new run in {out}"
    code, _ = _train(capfd, dataset, out, "--resume", "auto", "--max-steps", "4")
    assert code == 0 and _steps(out) == [1, 2, 3, 4]
    second_start = _log_lines(out).index(f"resume auto: resuming the run in {out}")
    assert "starting" in _log_lines(out)[0] and second_start > 0
    assert load_checkpoint(out)["step"] == 4


def test_resume_auto_falls_back_to_the_previous_checkpoint(dataset, tmp_path, capfd):
    out = tmp_path / "run"
    assert _train(capfd, dataset, out, "--max-steps", "3", "--save-every", "1")[0] == 0
    newest = out / CHECKPOINT_NAME
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2  # inside a tensor: the zip opens, the checksum does not match
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    newest.write_bytes(bytes(data))
    code, err = _train(capfd, dataset, out, "--resume", "auto", "--max-steps", "4")
    assert code == 0, err
    lines = _log_lines(out)
    start = lines.index(f"resume auto: resuming the run in {out}")
    assert lines[start + 1].startswith(f"checkpoint: skipping {newest} is damaged")
    assert lines[start + 2] == f"checkpoint: resuming from {PREVIOUS_NAME} (step 2)"
    assert load_checkpoint(out)["step"] == 4 and _steps(out)[-2:] == [3, 4]


def test_plain_resume_and_a_second_fresh_start_are_refused(dataset, tmp_path, capfd):
    missing = tmp_path / "missing"
    code, err = _train(capfd, dataset, missing, "--resume")
    assert code == 2 and not missing.exists()  # refused before anything is created
    _one_error_line(err, f"--resume: no checkpoint in {missing}; start without --resume, use --resume auto")
    out = tmp_path / "run"
    assert _train(capfd, dataset, out, "--max-steps", "1")[0] == 0
    code, err = _train(capfd, dataset, out, "--max-steps", "1")
    assert code == 2
    _one_error_line(err, f"{out} already holds a run; pass --resume (or --resume auto)")


def test_a_locked_folder_is_refused_with_the_holders_pid_and_host(dataset, tmp_path, capfd):
    out = tmp_path / "run"
    with RunLock(out).acquire():
        code, err = _train(capfd, dataset, out, "--resume", "auto")
        assert code == 2
        _one_error_line(err, f"{out} is in use by another training run (PID {os.getpid()} on host ")
        assert socket.gethostname() in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else was written
    assert _train(capfd, dataset, out, "--resume", "auto", "--max-steps", "1")[0] == 0  # released


def test_two_runs_on_one_folder(dataset, tmp_path):
    """The second start is refused at once, and the first run's checkpoints and metrics are its own."""
    out = tmp_path / "run"
    first = subprocess.Popen(
        _cli(dataset, out, "--save-every", "2", "--n-epochs", "500"), stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(lambda: (out / "metrics.jsonl").exists(), "the first run's first step")
        t0 = time.time()
        second = subprocess.run(
            _cli(dataset, out, "--resume", "auto"), capture_output=True, text=True, timeout=120
        )
        assert first.poll() is None, "the first run ended before the second started; lengthen it"
        assert second.returncode == 2, second.stderr
        line = _one_error_line(second.stderr, f"is in use by another training run (PID {first.pid} on host ")
        assert socket.gethostname() in line and time.time() - t0 < 60
        # Readers of the live run take no lock: plot, translate and export work while it trains.
        _wait_for(lambda: (out / CHECKPOINT_NAME).exists(), "the first run's first checkpoint")
        write_images(tmp_path / "photos", 2, size=(37, 29))
        assert main(["plot", str(out)]) == 0
        photos, translated = str(tmp_path / "photos"), str(tmp_path / "translated")
        assert main(["translate", "--checkpoint", str(out), "--input", photos, "--output", translated]) == 0
        assert (
            main(["export", "--checkpoint", str(out), "--onnx", str(tmp_path / "g.onnx"), "--size", "32"])
            == 0
        )
        assert first.poll() is None, "the first run ended before its readers did; lengthen it"
    finally:
        first.send_signal(signal.SIGTERM)  # stop the first run: it saves and exits 0
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    steps = _steps(out)
    assert steps == list(range(1, len(steps) + 1))  # one run's lines, none interleaved or repeated
    assert load_checkpoint(out)["step"] == steps[-1]


def test_a_sigkilled_runs_folder_is_taken_over_at_once(dataset, tmp_path):
    """DataLoader workers (forked) do not keep the lock alive after their parent is killed."""
    out = tmp_path / "run"
    run = subprocess.Popen(
        _cli(dataset, out, "--save-every", "1", "--num-workers", "2", "--n-epochs", "500"),
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: (out / PREVIOUS_NAME).exists(), "two checkpoints")
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    RunLock(out).acquire().release()  # at once: no orphaned worker holds it
    proc = subprocess.run(
        _cli(dataset, out, "--resume", "auto", "--max-steps", str(load_checkpoint(out)["step"] + 1)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"resume auto: resuming the run in {out}" in proc.stderr


@pytest.mark.parametrize("value", ["", "auto"])
def test_resume_flag_values(value):
    from fastcycle.cli import _parse, build_parser

    args = _parse(build_parser(), ["train", "--resume", *([value] if value else [])])
    assert args.resume == (value or True)
