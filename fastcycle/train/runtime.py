"""Device and mixed-precision choices, resolved once from the config."""

from __future__ import annotations

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
