"""`pytest benchmarks/ --budget SECONDS` (benchmarks/budget.py): the arithmetic without clocks, then two
real budgeted runs on this CPU, one left to finish and one killed after its first case."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import budget, report, results
from benchmarks.budget import Cost, Estimator, batch_of, priority_order, rule_of, skip_reason
from tests.conftest import session_env

ROOT = Path(__file__).resolve().parents[1]
TRAIN, INFER = "bench_train_step.py::test_train_step", "bench_infer.py::test_infer"
KERNEL, LOADERS = "bench_kernels.py::test_instance_norm", "bench_loaders.py"


def test_priority_order_is_the_record_s_value_order():
    # As collected on a GPU (each file in its own order), with one case no rule names.
    train = ["reference", "fastcycle_fp32", "bf16", "channels_last", "compile", "triton", "cudagraphs"]
    train += [f"best-b{b}" for b in (1, 4, 8, 16)]
    collected = [
        "bench_ceilings.py::test_ceilings",
        *[f"{TRAIN}[{name}]" for name in train],
        "bench_train_step.py::test_family_step[dcgan_b128]",
        *[f"{INFER}[{p}-{b}]" for p in ("eager_fp32", "compile", "aoti", "onnxruntime") for b in (1, 8, 32)],
        *[f"{KERNEL}[c-1-{p}-fwd]" for p in ("eager", "compile", "triton")],
        "bench_new.py::test_new",
        f"{LOADERS}::test_loader[torch-8w]",
        f"{LOADERS}::test_train_step[synthetic]",
        f"{LOADERS}::test_train_step[torch-8w]",
    ]
    ordered = [collected[i] for i in priority_order(collected)]
    expected = [
        "bench_ceilings.py::test_ceilings",
        *[f"{TRAIN}[{n}]" for n in ("reference", "best-b1", "best-b8", "fastcycle_fp32", "bf16")],
        *[f"{TRAIN}[{n}]" for n in ("channels_last", "compile", "triton", "cudagraphs")],
        *[f"{TRAIN}[{n}]" for n in ("best-b4", "best-b16")],
        "bench_train_step.py::test_family_step[dcgan_b128]",
        *[f"{INFER}[{p}]" for p in ("eager_fp32-1", "eager_fp32-32", "compile-1", "compile-32", "aoti-1")],
        *[f"{INFER}[{p}]" for p in ("aoti-32", "onnxruntime-1", "onnxruntime-8", "onnxruntime-32")],
        *[f"{INFER}[{p}-8]" for p in ("eager_fp32", "compile", "aoti")],  # batch 8 after 1 and 32
        *[f"{KERNEL}[c-1-{p}-fwd]" for p in ("triton", "eager", "compile")],
        f"{LOADERS}::test_loader[torch-8w]",
        f"{LOADERS}::test_train_step[synthetic]",  # the loaders' ceiling stays ahead of the loaders it rates
        f"{LOADERS}::test_train_step[torch-8w]",
        "bench_new.py::test_new",  # named by no rule: last, never dropped
    ]
    assert ordered == expected
    assert rule_of("bench_new.py::test_new")[1] is budget.DEFAULT_GUESS


def test_every_real_case_has_a_rule():
    from benchmarks import bench_infer, bench_kernels, bench_loaders, bench_train_step

    cases = [f"{TRAIN}[{c[0]}]" for c in bench_train_step.CASES]
    cases += [f"bench_train_step.py::test_family_step[{c[0]}]" for c in bench_train_step.FAMILY_CASES]
    cases += [f"{INFER}[{p}-{b}]" for p in bench_infer.PROVIDERS for b in (1, 8, 32)]
    cases += [f"{KERNEL}[c-1-{p}-{m}]" for p in bench_kernels.PROVIDERS for m in bench_kernels.MODES]
    cases += [f"{LOADERS}::test_loader[{i}]" for i in bench_loaders.IDS]
    cases += [f"{LOADERS}::test_train_step[{i}]" for i in ("synthetic", *bench_loaders.IDS)]
    unruled = [c for c in cases if rule_of(c)[1] is budget.DEFAULT_GUESS]
    assert not unruled


def test_batch_comes_from_the_parameter_or_the_case_name():
    assert batch_of(f"{INFER}[aoti-32]", {"provider": "aoti", "batch": 32}) == 32
    assert batch_of(f"{TRAIN}[best-b16]", {"name": "best-b16"}) == 16
    assert batch_of(f"{TRAIN}[reference]", {"name": "reference"}) == 1


def test_estimates_learn_per_group_and_scale_first_guesses():
    est = Estimator(gpu=True)
    rule = rule_of(f"{TRAIN}[best-b1]")[1]
    assert est.estimate(rule, 1) == (rule.gpu_s, "first guess for train-graphs x1.0")
    assert Estimator(gpu=False).estimate(rule, 1)[0] == rule.cpu_s
    # 360 s in all, 20 s of it 4 timed rounds at batch 1: building and compiling stay, the rounds and
    # the warm-up (one more round, 5 s) grow with the batch.
    est.learn(rule, Cost(total_s=360.0, timed_s=20.0, batch=1, rounds=4))
    assert est.estimate(rule, 1) == (360.0, "learned from 1 case of train-graphs")
    assert est.estimate(rule, 8)[0] == pytest.approx(335 + 8 * 25)
    est.learn(rule, Cost(total_s=300.0, timed_s=100.0, batch=8, rounds=10))
    assert est.estimate(rule, 16)[0] == pytest.approx(max(335 + 16 * 25, 190 + 2 * 110))
    assert est.estimate(rule, 1)[0] == 360.0  # the batch-8 case counts whole: a smaller batch, no shrink
    # That group's first case took twice its guess: other groups' first guesses double too.
    other = rule_of(f"{INFER}[aoti-1]")[1]
    assert est.scale() == pytest.approx(360.0 / rule.gpu_s) == pytest.approx(2.0)
    assert est.estimate(other, 1)[0] == pytest.approx(2 * other.gpu_s)
    fast, slow = Estimator(gpu=True), Estimator(gpu=True)
    fast.learn(rule, Cost(1.0, 0.5, 1))
    slow.learn(rule, Cost(100 * rule.gpu_s, 1.0, 1))
    assert fast.scale() == 1.0 and slow.scale() == 4.0  # never below the guess, at most 4x


def test_a_case_starts_only_if_its_estimate_fits():
    assert skip_reason(30.0, "why", 30.0) is None
    assert skip_reason(31.0, "learned from 2 cases of x", 30.4) == (
        "budget: needs ~31 s (learned from 2 cases of x), 30 s left"
    )
    assert skip_reason(5.0, "why", -3.0).endswith(", 0 s left")


def test_plugin_decides_learns_and_bounds_compile_time(monkeypatch):
    now = [1000.0]
    writes = []
    plugin = budget.BudgetPlugin(
        200.0, gpu=True, write=lambda *a: writes.append(a), clock=lambda: now[0], started=990.0
    )
    monkeypatch.setattr(budget, "_active", plugin)
    finish = budget.FINISH_S["gpu"]
    assert plugin.left() == 200.0 - finish - 10.0
    reference = f"{TRAIN}[reference]"
    assert plugin.decide(reference, {"name": "reference"}) is None  # 45 s guess, 180 left
    assert plugin.finished(reference, {"name": "reference"}, 54.0, 10.0, 10) == {
        "wall_s": 54.0,
        "estimated_s": rule_of(reference)[1].gpu_s,
    }
    now[0] += 60.0  # 120 s left for cases: a compile case (guessed 90 s, x54/45 as learned) fits
    compile1 = f"{INFER}[compile-1]"
    assert plugin.decide(compile1, {"provider": "compile", "batch": 1}) is None
    assert budget.compile_mode("max-autotune") == "default"  # 12 s spare after it: no autotuning
    assert budget.compile_mode("reduce-overhead") == "reduce-overhead"  # bounded modes pass through
    plugin.budget_s += budget.MAX_AUTOTUNE_EXTRA_S["gpu"]
    assert budget.compile_mode("max-autotune") == "max-autotune"
    plugin.budget_s -= budget.MAX_AUTOTUNE_EXTRA_S["gpu"]
    now[0] += 119.0
    reason = plugin.decide(f"{INFER}[aoti-1]", {"provider": "aoti", "batch": 1})
    assert reason == "budget: needs ~144 s (first guess for infer-aoti x1.2), 1 s left"
    monkeypatch.setattr(budget, "_active", None)
    assert budget.compile_mode("max-autotune") == "max-autotune"  # no --budget: as always


def test_results_files_say_partial_budget_and_skips(tmp_path):
    env = {"gpu": "NVIDIA H200", "git_sha": "abc1234"}
    skipped = [{"name": "test_x[1]", "file": "bench_x.py", "reason": "budget: needs ~9 s (g), 1 s left"}]
    path = results.results_path(env, tmp_path)
    results.write_results([], env, path=path, partial=True, budget_s=60.0, skipped=skipped)
    record = report.load(path)
    assert record["partial"] is True and record["budget_s"] == 60.0 and record["skipped"] == skipped
    plain = report.load(results.write_results([], env, tmp_path))  # a run without --budget
    assert plain["partial"] is False and plain["budget_s"] is None and plain["skipped"] == []


def test_git_sha_of_a_tree_copied_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise OSError("no git here")

    monkeypatch.setattr(results.subprocess, "run", no_git)
    monkeypatch.setenv("FASTCYCLE_GIT_SHA", "1a2b3c4")
    assert results.git_sha() == "1a2b3c4"
    monkeypatch.delenv("FASTCYCLE_GIT_SHA")
    assert results.git_sha() == "unknown"


# The budget of the two real runs: small enough that most cases are skipped for want of time, which is
# what is tested, and enough for start-up, the ceilings and the reference step (their first guesses,
# 12 s, plus 5 s to finish) on the slowest 2-core CPU sharing its cores with another test worker:
# those reach the reference step ~4 s after the start on the development machine, and may take 4x that.
BUDGET_S = 35


def _budgeted_run(out: Path, budget_s: int = BUDGET_S) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "benchmarks/",
        "--budget",
        str(budget_s),
        "--results-dir",
        str(out),
        "-q",
        "-p",
        "no:cacheprovider",
    ]


def _committed_results() -> set[str]:
    return {p.name for p in (ROOT / "benchmarks" / "results").glob("*")}


def test_budgeted_run_fits_and_leaves_a_valid_record(tmp_path):
    before = _committed_results()
    start = time.monotonic()
    proc = subprocess.run(
        _budgeted_run(tmp_path), cwd=ROOT, env=session_env(), capture_output=True, text=True, timeout=300
    )
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # 20 s over the budget: the interpreter's exit and one case running past its estimate on a busy CPU.
    assert wall <= BUDGET_S + 20, proc.stdout[-3000:]
    (path,) = tmp_path.glob("*.json")
    record = report.load(path)  # every field a report needs, checked
    assert record["partial"] is False and record["budget_s"] == BUDGET_S
    names = [c["name"] for c in record["cases"]]
    assert names[:2] == ["test_ceilings", "test_train_step[reference]"], names
    assert all(s["reason"] for s in record["skipped"])
    last = proc.stdout.splitlines()[-1]  # "13 passed, 58 skipped in 51.35s"
    assert f"{len(names)} passed" in last and f"{len(record['skipped'])} skipped" in last, last
    assert f"benchmarks --budget {BUDGET_S} s" in proc.stdout and f"results: {path}" in proc.stdout
    assert "| test_train_step[reference] |" in proc.stdout  # the closing table
    assert _committed_results() == before  # a CPU run never writes into the performance record


def test_killed_run_leaves_a_readable_partial_record(tmp_path):
    proc = subprocess.Popen(
        _budgeted_run(tmp_path),
        cwd=ROOT,
        env=session_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(tmp_path.glob("*.json"))
            if files and json.loads(files[0].read_text())["cases"]:  # whole: written by rename
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    (path,) = tmp_path.glob("*.json")
    record = report.load(path)
    assert record["partial"] is True and record["budget_s"] == BUDGET_S
    assert record["cases"][0]["name"] == "test_ceilings"
