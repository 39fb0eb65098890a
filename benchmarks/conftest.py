"""Shared setup for `pytest benchmarks/`: the device, its measured ceilings, and real vs smoke sizes.

On a GPU the benchmarks run at the generator's real shapes. Without one they run at tiny shapes, with
Triton kernels under its CPU interpreter: a smoke test that the benchmarks work, not a measurement.

Options: `--budget SECONDS` (benchmarks/budget.py: priority order, cases that no longer fit are
skipped, the results file rewritten after every case) and `--results-dir DIR` (where the results file
goes: benchmarks/results/ on a GPU by default; a budgeted CPU run writes into a temporary folder).
"""

import os
import tempfile
from pathlib import Path

import pytest
import torch

from benchmarks import budget, results

if not torch.cuda.is_available():  # read when a kernel is defined: before fastcycle.kernels is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMOKE = DEVICE.type != "cuda"


def rounds(gpu_rounds: int) -> int:
    """Timed rounds of a case: `gpu_rounds` on a GPU; one in a CPU smoke run, which checks that each
    case runs and times nothing worth keeping."""
    return 1 if SMOKE else gpu_rounds


def compile_options(**gpu_options) -> dict:
    """torch.compile's keyword arguments for a case: `gpu_options` (a mode) on a GPU; in a CPU smoke run,
    Dynamo's eager backend. The smoke run checks that each case's code runs, which tracing does in
    seconds, where Inductor's C++ would cost a quarter of a minute per graph; tests/test_compile.py and
    tests/test_export_aoti.py test Inductor's CPU code itself."""
    return {"backend": "eager"} if SMOKE else gpu_options


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, repeat: int) -> float:
    """Median seconds of fn(), device-synchronised."""
    times = []
    for _ in range(repeat):
        synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


@pytest.fixture(scope="session")
def ceilings() -> dict[str, float]:
    """What this GPU measurably does: copy bandwidth (bytes/s) and a large bf16 matmul (FLOP/s).

    Fractions of these, not of datasheet peaks, say how close a kernel gets to what is achievable.
    """
    if SMOKE:
        return {"dram_bytes_per_s": float("nan"), "bf16_flop_per_s": float("nan")}
    src = torch.empty(1 << 30, dtype=torch.uint8, device=DEVICE)  # 1 GiB: far beyond L2
    dst = torch.empty_like(src)
    copy = _time(lambda: dst.copy_(src), 20)
    a = torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16)
    mm = _time(lambda: a @ a, 20)
    return {"dram_bytes_per_s": 2 * src.numel() / copy, "bf16_flop_per_s": 2 * 8192**3 / mm}


def environment() -> dict[str, str]:
    """Versions and hardware, recorded with every case (and once per results file)."""
    return results.environment()


def pytest_addoption(parser):
    group = parser.getgroup("fastcycle benchmarks")
    group.addoption(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="run the most valuable cases that fit in SECONDS (benchmarks/budget.py); skip the rest",
    )
    group.addoption(
        "--results-dir",
        metavar="DIR",
        help="folder of the results file (default: benchmarks/results/ on a GPU, a temporary one on a CPU)",
    )


def results_dir(config) -> Path:
    chosen = config.getoption("results_dir")
    if chosen:
        return Path(chosen)
    # A CPU run is a smoke test, never part of the performance record in benchmarks/results/.
    return Path(tempfile.gettempdir()) / "fastcycle-benchmarks" if SMOKE else results.RESULTS_DIR


def pytest_configure(config):
    budget_s = config.getoption("budget")
    if budget_s is None:
        return
    if not budget_s > 0:
        raise pytest.UsageError(f"--budget {budget_s:g}: give the seconds the run may take, e.g. 420")
    env = results.environment()
    path = results.results_path(env, results_dir(config))

    def write(partial: bool, skipped: list[dict]) -> Path:
        bench = config._benchmarksession
        return results.write_results(
            bench.benchmarks, env, path=path, partial=partial, budget_s=budget_s, skipped=skipped
        )

    budget.start(config, budget_s, gpu=not SMOKE, write=write)


def pytest_sessionfinish(session, exitstatus):
    """On a GPU, write the run's results file (benchmarks/results.py): the performance record.
    (A budgeted run writes it itself, after every case and on any device.)"""
    bench = getattr(session.config, "_benchmarksession", None)
    if budget.active() or SMOKE or bench is None or bench.disabled or not bench.benchmarks:
        return
    path = results.write_results(bench.benchmarks, results.environment(), results_dir(session.config))
    print(f"\nbenchmarks: wrote {path}")
