"""`pytest benchmarks/` runs, each case once: the benchmarks cannot rot between GPU runs."""

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import session_env

ROOT = Path(__file__).resolve().parents[1]
# The only cases a CPU machine may skip, each for a reason it cannot fix: no other skip passes.
ALLOWED_SKIPS = {"tensorrt is not installed on this machine", "CUDA graphs need a GPU"}


def test_benchmarks_run_once_each():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/",
            "--benchmark-disable",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=session_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
    reasons = set(re.findall(r"^SKIPPED \[\d+\] \S+: (.+)$", proc.stdout, flags=re.MULTILINE))
    assert reasons <= ALLOWED_SKIPS, reasons - ALLOWED_SKIPS
