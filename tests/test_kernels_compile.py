"""The Triton kernels compile for Hopper (sm_90) and Ampere (sm_80), and the conv lands on tensor cores.

The numerical tests run the kernels under Triton's CPU interpreter, which never compiles them; this
compiles each one with the GPU toolchain in Triton's wheel (tests/aot_compile.py), no GPU needed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# ASTSource's signature format is Triton-version specific (this targets CI's 3.8); on a GPU the kernel
# tests themselves compile and run every kernel.
@pytest.mark.skipif(
    torch.cuda.is_available(), reason="on a GPU the kernel tests compile the kernels for real"
)
def test_kernels_compile_for_gpus_and_the_conv_uses_tensor_cores():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.aot_compile"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    failures = [r for r in records if not r["ok"]]
    assert proc.returncode == 0 and not failures, failures or proc.stderr[-3000:]
    assert len(records) == 2 * 3 * 8 and all(r["cubin"] for r in records)  # targets x dtypes x kernels
    for r in records:
        if r["kernel"] == "_reflect_conv_fwd" and r["dtype"] != "fp32":
            # bf16/fp16 implicit GEMM: Hopper's async warpgroup MMA, Ampere's mma.sync
            expected = "wgmma.mma_async" if r["target"] == "sm_90" else "mma.sync"
            assert expected in r["tensor_core_ops"], r
