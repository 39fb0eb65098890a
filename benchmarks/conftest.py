"""Shared setup for `pytest benchmarks/`: the device, its measured ceilings, and real vs smoke sizes.

On a GPU the benchmarks run at the generator's real shapes. Without one they run at tiny shapes, with
Triton kernels under its CPU interpreter: a smoke test that the benchmarks work, not a measurement.
"""

import os

import pytest
import torch

from benchmarks import results

if not torch.cuda.is_available():  # read when a kernel is defined: before fastcycle.kernels is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMOKE = DEVICE.type != "cuda"


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


def pytest_sessionfinish(session, exitstatus):
    """On a GPU, write the run's results file (benchmarks/results.py): the performance record."""
    bench = getattr(session.config, "_benchmarksession", None)
    if SMOKE or bench is None or bench.disabled or not bench.benchmarks:
        return
    path = results.write_results(bench.benchmarks, results.environment())
    print(f"\nbenchmarks: wrote {path}")
