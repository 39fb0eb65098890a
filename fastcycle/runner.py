"""What every inference backend offers `fastcycle translate` and the benchmarks: a callable on batches.

A runner takes float32 (N, 3, H, W) images in [-1, 1] (H and W multiples of its `size_multiple`) on
`runner.device` and returns the translated batch, float32, same shape, same device; `run_padded` feeds
it images of any size. The torch runner lives here; the ONNX Runtime, TensorRT and AOTInductor ones in
fastcycle.export, which opens any of them by name (fastcycle.export.backends). Translate's
decode/encode pipeline is written once, against this protocol, and imports no backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from fastcycle.config import ModelConfig
from fastcycle.data.transforms import pad_to_multiple
from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.models.fused import FusedInstanceNorm2d, ReflectConv2d
from fastcycle.trained import image_channels

# The size multiple of an exported file that does not record its generator's: the default --netG's, as
# for a reference .pth given without flags (fastcycle.trained). Such files are TensorRT plans (which
# keep no metadata), AOTInductor packages and ONNX files exported before U-Net support. A plan or a
# fixed-size package takes one H x W and checks it on every call, so this multiple only decides which
# image sizes reach that check.
UNRECORDED_SIZE_MULTIPLE = GENERATOR_SPECS[ModelConfig.netG].size_multiple


class Runner(Protocol):
    name: str  # "torch", "onnxruntime", "tensorrt", "aoti"
    device: torch.device  # where inputs are expected and outputs returned
    note: str  # one line for the log: what it runs on (e.g. "CUDAExecutionProvider, fp16")
    size_multiple: int  # input H and W must be multiples of this (the generator's, from its spec)
    input_nc: int  # channels in (3: RGB, 1: grayscale)
    output_nc: int  # channels out
    precision: str  # what it computes in: "fp32", "bf16" or "fp16" (16-bit images need fp32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchRunner:
    """The generator itself, eager, optionally under autocast; channels-last on CPU.

    Channels-last (NHWC) on CPU because oneDNN's convolutions run natively in it and skip their NCHW
    reorders, most of all the depthwise ones (measured on the 2-core CPU, fp32, 256x256, two threads:
    resnet_9blocks 1.1-1.2x, the mobile student 1.5-1.9x). On a GPU the layout stays NCHW until the GPU
    benchmark (benchmarks/bench_infer.py's bf16 channels-last case) has measured the other: torch's
    CUDA instance norm copies an NHWC input to NCHW at every layer.
    """

    name = "torch"

    def __init__(
        self,
        net: torch.nn.Module,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        compile_backend: str | None = None,
    ):
        self.layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.net = net.to(device, memory_format=self.layout).eval()
        # compile_backend: torch.compile's backend ("inductor" for --compile). dynamic=True: one graph for
        # every image size (a server or a folder sees many), where static shapes would recompile per size
        # and stop compiling after torch's recompile limit. The tiling program reads self.net, uncompiled.
        self.forward = self.net
        if compile_backend is not None:
            self.forward = torch.compile(self.net, backend=compile_backend, dynamic=True, fullgraph=True)
        self.device, self.amp_dtype = device, amp_dtype
        self.size_multiple = net.spec.size_multiple
        self.input_nc, self.output_nc = image_channels(net)
        self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")
        layout = ", channels-last" if self.layout == torch.channels_last else ""
        fused = any(isinstance(m, FusedInstanceNorm2d | ReflectConv2d) for m in net.modules())
        how = "eager" if compile_backend is None else f"compiled ({compile_backend})"
        self.note = (
            f"torch {how} on {device}, {self.precision}{layout}, {'triton' if fused else 'torch'} kernels"
        )

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.layout)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self.forward(x).float()


def run_padded(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, multiple: int) -> torch.Tensor:
    """run(x) for an (N, 3, H, W) batch of any H and W: padded on the bottom and right up to multiples of
    `multiple` (the generator's size multiple; reflection, fastcycle.data.transforms.pad_to_multiple),
    so no image is resampled, and the output cropped back to H x W."""
    h, w = x.shape[2:]
    return run(pad_to_multiple(x, multiple))[:, :, :h, :w]
