"""The learning tests' runs over several seeds on this CPU: the table their bounds are set from.

    python -m tests.margins                                   # every run, seeds 0-4
    python -m tests.margins --runs distill,demo --seeds 0-7 --threads 1 --json margins.jsonl
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m tests.margins  # AVX2-only kernels

The last form makes PyTorch and oneDNN take the kernels of a CPU without AVX-512 on one that has it.
Each run is the test's own function (the same data, config and metrics) at another --seed. Prints a
row per run and seed, then each metric's worst value beside the test's bound; --json appends the rows
(with the CPU capability and thread count) to a file, so runs on several machines can be pooled:
`python -m tests.margins --table margins.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tests.learning import holds, shortfall
from tests.test_demo import DEMO_BOUNDS, short_demo_run
from tests.test_distill import STUDENT_BOUNDS, student_learns, train_teacher
from tests.test_families import (
    DC_BOUNDS,
    P2P_BOUNDS,
    SEMI_BOUNDS,
    dc_learning,
    p2p_learning,
    semi_learning,
    train_dc,
    train_p2p,
    train_semi,
)

# name -> (the run at a seed in an empty folder, returning its metrics; the test's bounds)
RUNS = {
    "distill": (
        lambda root, seed: student_learns(train_teacher(root, seed), root / "student", seed),
        STUDENT_BOUNDS,
    ),
    "pix2pix": (lambda root, seed: p2p_learning(train_p2p(root, seed)), P2P_BOUNDS),
    "dcgan": (lambda root, seed: dc_learning(train_dc(root, seed)), DC_BOUNDS),
    "semi": (lambda root, seed: semi_learning(train_semi(root, seed), root / "held_out"), SEMI_BOUNDS),
    "demo": (lambda root, seed: short_demo_run(root / "run", seed), DEMO_BOUNDS),
}


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def measure(run: str, seed: int) -> dict:
    fn, _ = RUNS[run]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        metrics = fn(Path(tmp), seed)
    return {
        "run": run,
        "seed": seed,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
        "threads": torch.get_num_threads(),
        "seconds": round(time.monotonic() - start, 1),
        **{k: round(float(v), 4) for k, v in metrics.items()},
    }


def table(rows: list[dict]) -> str:
    """Per run and metric over `rows` (every seed, CPU and thread count): the mean, the standard
    deviation, the best and worst value, the test's bound, and whether every row holds it."""
    header = ("run", "metric", "runs", "mean", "sd", "best", "worst", "bound", "all hold")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, (_, bounds) in RUNS.items():
        mine = [r for r in rows if r["run"] == run]
        for metric, (op, limit) in bounds.items():
            values = [r[metric] for r in mine if metric in r]
            if not values:
                continue
            ranked = sorted(values, key=lambda v: shortfall(v, (op, limit)))
            best, worst = ranked[0], ranked[-1]
            ok = all(holds(v, (op, limit)) for v in values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells = (run, metric, len(values), f"{statistics.mean(values):.4g}", f"{sd:.2g}")
            cells += (f"{best:.4g}", f"{worst:.4g}", f"{op} {limit:g}", ok)
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--seeds", default="0-4", help="a seed or a range, e.g. 0-4")
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: this machine's)")
    parser.add_argument("--json", type=Path, help="append each row to this file (JSON lines)")
    parser.add_argument("--table", type=Path, help="print the table of a JSON-lines file and stop")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs.split(","):
        for seed in _seeds(args.seeds):
            row = measure(run, seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
