"""How a segment's ops compute on one tile: the SegmentBackend protocol and its torch implementation.

The executor (fastcycle.tiling.execute) hands a backend the tile's input regions and the plan (each op's
crops and pads, fastcycle.tiling.geometry.Step) and gets back the segment's outputs over their planned
regions. The torch backend runs the ops with torch.nn.functional on the executor's device, optionally
under autocast; fastcycle.export.tiled_ort's runs each segment as a small ONNX model.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from fastcycle.tiling.geometry import Region, TilePlan
from fastcycle.tiling.program import Program, Segment

# Per instance-norm op (keyed by its output name): the whole image's normalisation as a per-channel
# affine map, (scale, shift), each (1, C, 1, 1) float32: scale = gamma / sqrt(var + eps),
# shift = beta - mean * scale.
Norms = dict[str, tuple[torch.Tensor, torch.Tensor]]


class SegmentBackend(Protocol):
    device: torch.device  # where run() wants its inputs and returns its outputs
    name: str  # for the log line

    def bind(
        self, program: Program, segs: list[Segment], device: torch.device, amp_dtype: torch.dtype | None
    ) -> None:
        """Prepare every segment (weights on the device, sessions built) once, before the first tile."""
        ...

    def run(
        self, index: int, inputs: dict[str, torch.Tensor], plan: TilePlan, norms: Norms
    ) -> dict[str, torch.Tensor]:
        """Segment `index` on one tile: inputs over plan.need regions -> its outputs over theirs."""
        ...


def crop(t: torch.Tensor, r: Region) -> torch.Tensor:
    return t[:, :, r[0] : r[1], r[2] : r[3]]


class TorchSegments:
    """Segments as eager torch ops; channels-last on the CPU.

    Channels-last on CPU because oneDNN's convolutions run natively in it and skip their NCHW reorders
    (fastcycle.runner.TorchRunner measured 1.1-1.9x on whole generators); a tile's crops are copied
    once into that layout before each conv.
    """

    name = "torch"

    def bind(self, program, segs, device, amp_dtype):
        self.segs, self.device, self.amp_dtype = segs, device, amp_dtype
        self.image = program.input
        self.layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.params = {}
        for seg in segs:
            for op in seg.ops:
                w = None if op.weight is None else op.weight.to(device).contiguous(memory_format=self.layout)
                per_channel = lambda v: None if v is None else v.to(device).view(1, -1, 1, 1)  # noqa: E731
                self.params[op.output] = (
                    w,
                    op.bias.to(device)
                    if op.kind in ("conv", "convT") and op.bias is not None
                    else per_channel(op.bias),
                    per_channel(op.scale),
                )
        # Each buffer's last reader within its segment: a tile's intermediates are freed as soon as read.
        self.last = []
        for seg in segs:
            last = {}
            for i, op in enumerate(seg.ops):
                for name in op.inputs:
                    last[name] = i
            self.last.append(last)

    @torch.no_grad()
    def run(self, index, inputs, plan, norms):
        seg, last = self.segs[index], self.last[index]
        env = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        keep = set(seg.outputs)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            for i, (op, step) in enumerate(zip(seg.ops, plan.steps, strict=True)):
                xs = [crop(env[n], c) for n, c in zip(op.inputs, step.crops, strict=True)]
                # A ReLU whose input nobody reads afterwards runs in place, as the modules' ReLU(True)
                # does: one tile-sized tensor and one pass fewer. Never on the caller's image.
                name = op.inputs[0]
                in_place = last[name] == i and name not in keep and name != self.image
                env[op.output] = self._op(op, step, xs, norms, in_place)
                for n in op.inputs:
                    if last[n] == i and n not in keep:
                        del env[n]
        return {o: env[o] for o in seg.outputs}

    def _op(self, op, step, xs, norms, in_place: bool) -> torch.Tensor:
        weight, bias, scale = self.params[op.output]
        t, b, left, right = step.pads
        x = xs[0]
        if op.kind == "pad":
            return crop(F.pad(x, (left, right, t, b), mode="reflect"), step.out)
        if op.kind == "conv":
            if any(step.pads):  # zero padding only where the tile meets the image's border
                x = F.pad(x, (left, right, t, b))
            x = x.contiguous(memory_format=self.layout)
            return F.conv2d(x, weight, bias, op.stride, 0, 1, op.groups)
        if op.kind == "convT":
            x = x.contiguous(memory_format=self.layout)
            return crop(F.conv_transpose2d(x, weight, bias, op.stride, 0, 0, op.groups), step.out)
        if op.kind == "inorm":
            s, shift = norms[op.output]
            return torch.addcmul(shift, x.float(), s)  # normalised in fp32 also under autocast
        if op.kind == "affine":
            return torch.addcmul(bias.to(x.dtype), x, scale.to(x.dtype))
        if op.kind == "relu":
            return F.relu(x, inplace=in_place)
        if op.kind == "lrelu":
            return F.leaky_relu(x, op.slope, inplace=in_place)
        if op.kind == "tanh":
            return torch.tanh(x)
        if op.kind == "add":
            return xs[0] + xs[1]
        if op.kind == "cat":
            return torch.cat(xs, 1)
        raise ValueError(f"unknown op kind {op.kind!r}")
