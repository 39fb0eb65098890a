"""The performance record: one JSON file per GPU benchmark run, written by the harness, never by hand.

`pytest benchmarks/` on a GPU ends by writing `benchmarks/results/<gpu>-<yyyymmdd>-<sha>.json`
(benchmarks/conftest.py calls `write_results`). Schema 1:

    {
      "schema": 1,
      "created": "2026-11-23T21:05:00Z",
      "git_sha": "1a2b3c4",                 # short sha of HEAD ("-dirty" appended with local changes)
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
          "extra": {...}             # everything the benchmark put in extra_info
        }
      ]
    }

A case's identity across files is (file, name); `python -m benchmarks.report` compares files by it.
"""

from __future__ import annotations

import json
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
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
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


def write_results(benchmarks, env: dict, out_dir: Path = RESULTS_DIR) -> Path:
    """Write the run's file atomically; returns its path."""
    cases = [case_record(b) for b in benchmarks if getattr(b, "stats", None) and b.stats.data]
    record = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_sha": env.get("git_sha", "unknown"),
        "env": env,
        "cases": cases,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (
        out_dir / f"{gpu_slug(env.get('gpu', 'unknown'))}-{time.strftime('%Y%m%d')}-{record['git_sha']}.json"
    )
    text = json.dumps(record, indent=1, default=str) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def load_results(path: str | Path) -> dict:
    record = json.loads(Path(path).read_text())
    if record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: results schema {record.get('schema')!r}, expected {SCHEMA}")
    return record
