"""The learning tests' bounds: what a short training run on a toy problem must reach.

A run's result moves with the seed, and with the CPU it runs on: AVX-512 or AVX2 kernels, one thread
or two, change the order of float sums, and a GAN turns that rounding into another trajectory, as a
new seed does. So each bound is set from tests/margins.py's table (seeds 0-4 on AVX-512 and AVX2
kernels, with one and two threads: 20 runs; tests/data/margins.jsonl), at least two standard deviations
of the seed-to-seed spread beyond the worst of those runs, and far from what an untrained model scores,
so that the test still fails when the model does not learn.

A bound is (op, value): ">", ">=", "<", "<=", or "~" (within 0.1 of value: a fixed quantity, not a
learned one).
"""

from __future__ import annotations

import operator

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def holds(value: float, bound: tuple[str, float]) -> bool:
    op, limit = bound
    return abs(value - limit) <= 0.1 if op == "~" else OPS[op](value, limit)


def shortfall(value: float, bound: tuple[str, float]) -> float:
    """How poorly `value` fares against `bound`'s direction: larger for a smaller value under > or >=,
    a larger one under < or <=, one farther from the value under ~. The worst of several values is
    max(values, key=lambda v: shortfall(v, bound))."""
    op, limit = bound
    if op == "~":
        return abs(value - limit)
    return -value if op in (">", ">=") else value


def assert_within(measured: dict[str, float], bounds: dict[str, tuple[str, float]]) -> None:
    """Every bounded metric holds; the message names each that does not, with all the values."""
    failed = [
        f"{k} = {measured[k]:.4g}, wanted {op} {v:g}"
        for k, (op, v) in bounds.items()
        if not holds(measured[k], (op, v))
    ]
    assert not failed, f"{'; '.join(failed)} (measured: {measured})"
