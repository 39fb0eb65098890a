"""Device, mixed-precision and kernel choices, resolved once: for training and for inference alike."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from fastcycle.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but no CUDA GPU is visible; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    return device


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16/AMX); elsewhere CPU bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    note: str  # one line for the log saying what was chosen and why

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_scaler(self) -> bool:
        # fp16's 5-bit exponent underflows small gradients; bf16 has fp32's range and needs no scaling.
        return self.dtype == torch.float16


def resolve_precision(amp: bool, amp_dtype: str, device: torch.device) -> Precision:
    """--amp picks bf16 where the device runs it fast, fp16 on older GPUs; --amp-dtype forces one."""
    if not amp and amp_dtype == "auto":
        return Precision(None, "precision: fp32")
    if amp_dtype == "bf16":
        return Precision(torch.bfloat16, "precision: bf16 autocast")
    if amp_dtype == "fp16":
        return Precision(torch.float16, "precision: fp16 autocast with gradient scaling")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "precision: bf16 autocast")
        return Precision(
            torch.float16, "precision: fp16 autocast with gradient scaling (no bf16 on this GPU)"
        )
    if cpu_has_fast_bf16():
        return Precision(torch.bfloat16, "precision: bf16 autocast")
    return Precision(
        None, "precision: fp32 (--amp: this CPU has no native bf16, where autocast would be slower)"
    )


def _triton_problem(device: torch.device) -> str | None:
    """None when fastcycle's Triton kernels import, compile and agree with torch on `device`."""
    try:
        from fastcycle.kernels.instance_norm import instance_norm, instance_norm_reference
        from fastcycle.kernels.reflect_conv import reflect_conv2d, reflect_conv2d_reference

        x = torch.randn(1, 16, 8, 8, device=device)
        w = torch.randn(16, 16, 3, 3, device=device) / 12
        checks = {
            "instance norm": (instance_norm(x, relu=True), instance_norm_reference(x, relu=True)),
            "reflection-pad conv": (reflect_conv2d(x, w), reflect_conv2d_reference(x, w)),
        }
        for name, (got, expected) in checks.items():
            # loose enough for TF32 convs (10-bit mantissa), far below any indexing mistake
            if not torch.allclose(got, expected, atol=1e-2, rtol=1e-2):
                return f"the fused {name} disagrees with torch on this device"
    except Exception as e:  # a missing or broken triton, driver or compiler: any of them means no
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def resolve_kernels(name: str, device: torch.device) -> tuple[str, str]:
    """--kernels auto|torch|triton -> ("torch" | "triton", one log line saying which and why)."""
    if name == "torch":
        return "torch", "kernels: torch"
    # Triton compiles for GPUs; on the CPU it only runs under its interpreter, which the tests use.
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" and not (name == "triton" and interpreted):
        if name == "triton":
            raise UserError(
                "--kernels triton needs a CUDA GPU (Triton compiles for GPUs); use --kernels torch"
            )
        return "torch", "kernels: torch"
    problem = _triton_problem(device)
    if problem is not None:
        if name == "triton":
            raise UserError(f"--kernels triton: Triton does not work here ({problem}); use --kernels torch")
        return "torch", f"kernels: torch (Triton does not work here: {problem})"
    return "triton", "kernels: triton (fused instance norm + ReLU + residual, reflection-pad conv)"
