"""What every inference backend offers `fastcycle translate` and the benchmarks: a callable on batches.

A runner takes float32 (N, 3, H, W) images in [-1, 1] (H and W multiples of `size_multiple`, 4 unless
it says otherwise) on `runner.device` and returns the translated batch, float32, same shape, same
device. The torch runner lives here; the ONNX Runtime, TensorRT and AOTInductor ones in
fastcycle.export, which opens any of them by name (fastcycle.export.backends). Translate's
decode/encode pipeline is written once, against this protocol, and imports no backend.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Runner(Protocol):
    name: str  # "torch", "onnxruntime", "tensorrt", "aoti"
    device: torch.device  # where inputs are expected and outputs returned
    note: str  # one line for the log: what it runs on (e.g. "CUDAExecutionProvider, fp16")

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchRunner:
    """The generator itself, eager, optionally under autocast."""

    name = "torch"

    def __init__(self, net: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None):
        self.net, self.device, self.amp_dtype = net.to(device).eval(), device, amp_dtype
        self.size_multiple = getattr(net, "size_multiple", 4)  # what H and W must divide by (U-Net: 2**downs)
        precision = str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32"
        self.note = f"torch eager on {device}, {precision}"

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self.net(x).float()
