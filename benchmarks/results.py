"""The performance record: one JSON file per GPU benchmark run, written by the harness, never by hand.

`pytest benchmarks/` on a GPU ends by writing `benchmarks/results/<gpu>-<yyyymmdd>-<sha>.json`
(benchmarks/conftest.py calls `write_results`; `--results-dir` picks another folder). A budgeted run,
`pytest benchmarks/ --budget SECONDS` (benchmarks/budget.py), rewrites the file after every case, on a
CPU too (into a temporary folder unless `--results-dir` says where), so a run killed at any moment
leaves a valid file that says it is partial. Schema 1:

    {
      "schema": 1,
      "created": "2026-11-23T21:05:00Z",
      "git_sha": "1a2b3c4",                 # short sha of HEAD ("-dirty" appended with local changes)
      "partial": false,                     # true: the run had not finished when this was written
                                            # (still running, killed, interrupted); its cases are final
      "budget_s": 420.0,                    # the run's --budget, or null for a run without one
      "skipped": [                          # every case that did not run, with why
        {"name": "test_infer[aoti-32]", "file": "bench_infer.py",
         "reason": "budget: needs ~95 s (learned from 1 case of infer-aoti), 40 s left"},
        {"name": "test_infer[tensorrt-1]", "file": "bench_infer.py",
         "reason": "tensorrt is not installed on this machine"}
      ],
      "env": {"gpu": "NVIDIA H100 80GB HBM3", "driver": "...", "cuda": "12.8", "torch": "...",
              "triton": "...", "cudnn": "...", "onnxruntime": "...", "dali": "...", "python": "..."},
      "cases": [
        {
          "name": "test_train_step[4-reference]",         # pytest-benchmark's name
          "file": "bench_train_step.py",
          "params": {"case": "reference", "batch": 1},   # the test's parametrization
          "timings_s": {"median": 0.01, "p10": 0.0098, "p90": 0.0102, "rounds": 50},
          "pairs_per_s": 98.1,       # exactly one of pairs_per_s (training steps), images_per_s
                                     # (generator inference), loader_images_per_s (data loaders); or none
          "mfu": 0.23,               # or null
          "peak_memory_bytes": 123,  # or null
          "extra": {...}             # everything the benchmark put in extra_info; a budgeted run
                                     # adds wall_s (the case's whole cost: fixtures, compile,
                                     # warm-up, timed rounds) and estimated_s (the budget's guess)
        }
      ]
    }

A case's identity across files is (file, name); `python -m benchmarks.report` compares files by it.
Files written before `partial`, `budget_s` and `skipped` existed lack them: read them as false, null, [].
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

from fastcycle.atomic import write_atomic

SCHEMA = 1
THROUGHPUT_KEYS = ("pairs_per_s", "images_per_s", "loader_images_per_s")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _version(module: str) -> str:
    try:
        return __import__(module, fromlist=["__version__"]).__version__
    except Exception:  # not installed, or a broken install: the record says so instead of failing
        return "not installed"


def git_sha() -> str:
    """HEAD's short sha, "-dirty" with local changes; where there is no git repository (a copy of the
    tree sent to a GPU machine) the sha given in FASTCYCLE_GIT_SHA, else "unknown"."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("FASTCYCLE_GIT_SHA") or "unknown"
    return sha + ("-dirty" if dirty.strip() else "")


def environment() -> dict[str, str]:
    import torch

    env = {
        "torch": torch.__version__,
        "triton": _version("triton"),
        "onnxruntime": _version("onnxruntime"),
        "dali": _version("nvidia.dali"),
        "python": platform.python_version(),
        "git_sha": git_sha(),
    }
    if torch.cuda.is_available():
        env |= {
            "gpu": torch.cuda.get_device_name(),
            "cuda": torch.version.cuda or "",
            "cudnn": str(torch.backends.cudnn.version()),
        }
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split("\n")[0]
        except (OSError, subprocess.CalledProcessError):
            env["driver"] = "unknown"
    else:
        env["gpu"] = "none"
    return env


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3': the GPU kind part of a results file name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().removeprefix("nvidia").strip()).strip("-") or "unknown"


def case_record(bench) -> dict:
    """One pytest-benchmark result (its Metadata object) as a schema-1 case."""
    stats = bench.stats
    data = sorted(stats.data)

    def pct(q: float) -> float:
        return data[min(len(data) - 1, int(q * len(data)))]

    extra = dict(bench.extra_info)
    record = {
        "name": bench.name,
        "file": Path(bench.fullname.split("::")[0]).name,
        "params": {
            k: v if isinstance(v, int | float | str | bool) else str(v)
            for k, v in (bench.params or {}).items()
        },
        "timings_s": {"median": stats.median, "p10": pct(0.1), "p90": pct(0.9), "rounds": len(data)},
        "mfu": extra.get("mfu"),
        "peak_memory_bytes": extra.get("peak_memory_bytes"),
        "extra": extra,
    }
    for key in THROUGHPUT_KEYS:
        if key in extra:
            record[key] = extra[key]
    return record


def results_path(env: dict, out_dir: Path = RESULTS_DIR) -> Path:
    """`<out_dir>/<gpu>-<yyyymmdd>-<sha>.json`: a run fixes it once, so a run past midnight keeps one file."""
    sha = env.get("git_sha", "unknown")
    return Path(out_dir) / f"{gpu_slug(env.get('gpu', 'unknown'))}-{time.strftime('%Y%m%d')}-{sha}.json"


def write_results(
    benchmarks,
    env: dict,
    out_dir: Path = RESULTS_DIR,
    *,
    path: Path | None = None,
    partial: bool = False,
    budget_s: float | None = None,
    skipped: list[dict] | tuple = (),
) -> Path:
    """Write the run's file atomically (to `path`, else `results_path(env, out_dir)`); returns its path."""
    cases = [case_record(b) for b in benchmarks if getattr(b, "stats", None) and b.stats.data]
    record = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_sha": env.get("git_sha", "unknown"),
        "partial": partial,
        "budget_s": budget_s,
        "skipped": list(skipped),
        "env": env,
        "cases": cases,
    }
    path = Path(path) if path is not None else results_path(env, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, default=str) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def load_results(path: str | Path) -> dict:
    record = json.loads(Path(path).read_text())
    if record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: results schema {record.get('schema')!r}, expected {SCHEMA}")
    return record
