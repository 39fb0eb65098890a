"""The machine's measured ceilings, first in every results file: what the other cases are fractions of.

    pytest benchmarks/bench_ceilings.py

extra_info holds the `ceilings` fixture (benchmarks/conftest.py: a 1 GiB device-to-device copy and an
8192^3 bf16 matmul; NaN on a CPU, where there is nothing to measure them against). The timed rounds
are that copy again, so the case's own timings show how steady the memory system was during the run.
"""

import torch

from benchmarks.conftest import DEVICE, SMOKE, environment, rounds, synchronize


def test_ceilings(benchmark, ceilings):
    src = torch.empty((1 << 20) if SMOKE else (1 << 30), dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)
        synchronize()

    copy()
    benchmark.pedantic(copy, rounds=rounds(20), iterations=1)
    info = {"copy_bytes": 2 * src.numel(), "env": environment(), **ceilings}
    stats = getattr(benchmark, "stats", None)
    if stats:
        info["copy_bytes_per_s"] = 2 * src.numel() / stats.stats.median
    benchmark.extra_info.update(info)
