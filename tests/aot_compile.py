"""Compile every fastcycle Triton kernel for real GPUs, without one: `python -m tests.aot_compile`.

Triton's wheel carries its CUDA compiler and ptxas, so `triton.compile` on an `ASTSource` produces PTX
and a cubin for a named GPU target on any machine. The interpreter (what the numerical tests use) never
compiles, so this is what catches a kernel that only the GPU compiler rejects. Must run without
TRITON_INTERPRET (kernels defined under it are not compilable). Prints one JSON line per compilation.
"""

import inspect
import json
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastcycle.kernels import instance_norm_kernels as norm
from fastcycle.kernels import reflect_conv as conv

TARGETS = {"sm_90": GPUTarget("cuda", 90, 32), "sm_80": GPUTarget("cuda", 80, 32)}


def _signature(fn, dtype: str, constexprs: dict) -> dict[str, str]:
    """Argument types: activations in `dtype`, statistics and norm parameters fp32, indices i32."""
    activation = {"x_ptr", "y_ptr", "r_ptr", "g_ptr", "dx_ptr"}
    if fn is conv._reflect_conv_fwd:
        activation |= {"w_ptr", "b_ptr"}  # the conv's weight and bias are cast to the input dtype
    types = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in constexprs:
            types[name] = "constexpr"
        elif name.endswith("_ptr"):
            types[name] = f"*{dtype}" if name in activation else "*fp32"
        else:
            types[name] = "fp32" if name == "eps" else "i32"
    return types


def _cases(dtype: str):
    """The launch configurations the host code picks on a GPU (see each kernel's _launch_config)."""
    block_k = 16 if dtype == "fp32" else 32
    nhwc, nchw = dict(BLOCK_HW=32, BLOCK_C=64), dict(BLOCK_HW=1024, BLOCK_C=1)
    return [
        (norm.partial_stats, nhwc),
        (norm.partial_stats, nchw),
        (norm.normalize, dict(AFFINE=True, RELU=True, RESIDUAL=True, SPLIT_P2=8, **nhwc)),
        (norm.normalize, dict(AFFINE=False, RELU=False, RESIDUAL=False, SPLIT_P2=64, **nchw)),
        (norm.backward_partials, dict(AFFINE=True, RELU=True, **nhwc)),
        (norm.backward_dx, dict(AFFINE=False, RELU=True, SPLIT_P2=16, **nchw)),
        (
            conv._reflect_conv_fwd,
            dict(STRIDE=1, PAD=1, KW=3, HAS_BIAS=True, ALLOW_TF32=dtype != "fp32", UPCAST=False)
            | dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=block_k),
        ),
        (
            conv._reflect_conv_fwd,
            dict(STRIDE=1, PAD=3, KW=7, HAS_BIAS=False, ALLOW_TF32=True, UPCAST=False)
            | dict(BLOCK_M=64, BLOCK_N=16, BLOCK_K=block_k),
        ),
    ]


def main() -> int:
    failed = 0
    for target_name, target in TARGETS.items():
        for dtype in ("bf16", "fp16", "fp32"):
            for fn, constexprs in _cases(dtype):
                record = {"target": target_name, "dtype": dtype, "kernel": fn.fn.__name__}
                try:
                    src = ASTSource(fn=fn, signature=_signature(fn, dtype, constexprs), constexprs=constexprs)
                    compiled = triton.compile(src, target=target)
                    ptx = compiled.asm["ptx"]
                    record |= {"ok": True, "cubin": "cubin" in compiled.asm}
                    record["tensor_core_ops"] = sorted(
                        set(re.findall(r"\b(wgmma\.mma_async|mma\.sync)", ptx))
                    )
                except Exception as e:  # report every failure, not just the first
                    failed += 1
                    record |= {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
                print(json.dumps(record), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
