"""The learning tests' bounds stay where the measurements put them (tests/learning.py): every committed
run of tests/margins.py holds them, with two standard deviations of the seed-to-seed spread to spare.
A bound tightened past the measured runs, or a metric changed without measuring it again, fails here."""

import json
import statistics
from pathlib import Path

import pytest

from tests.learning import holds, shortfall
from tests.margins import RUNS

ROWS = [
    json.loads(line) for line in (Path(__file__).parent / "data" / "margins.jsonl").read_text().splitlines()
]


@pytest.mark.parametrize("run", RUNS)
def test_the_measured_runs_hold_each_bound_with_two_sd_to_spare(run):
    rows = [r for r in ROWS if r["run"] == run]
    # Seeds 0-4 on both CPU classes' kernels, with one and two threads.
    assert {(r["seed"], r["cpu"], r["threads"]) for r in rows} == {
        (s, c, t) for s in range(5) for c in ("AVX2", "AVX512") for t in (1, 2)
    }
    for metric, (op, limit) in RUNS[run][1].items():
        values = [r[metric] for r in rows]
        assert all(holds(v, (op, limit)) for v in values), (metric, values)
        worst = max(values, key=lambda v: shortfall(v, (op, limit)))
        spare = 2 * statistics.stdev(values)
        if op in (">", ">="):
            assert limit <= worst - spare, (metric, worst, spare)
        elif op in ("<", "<="):
            assert limit >= worst + spare, (metric, worst, spare)
