"""A generator as a layer program: a list of ops over named buffers, lowered from its eval-mode modules.

The program is what the tiled executor (fastcycle.tiling.execute) runs: every op is local (its output
pixel depends on a fixed window of its input) except instance norm, whose per-channel statistics span
the whole image. `segments` cuts the program before each instance norm, so that one segment's tiles can
all run before the statistics the next segment needs are complete.

Ops (`Op.kind`), each on (N, C, H, W):
  pad     reflection pad by `pads` (top, bottom, left, right)
  conv    convolution: `weight` (C_out, C_in / groups, kh, kw), `bias`, `stride`, zero `pads`, `groups`
  convT   transposed convolution: `weight` (C_in, C_out / groups, kh, kw), `bias`, `stride`, `pads`,
          `output_padding`
  inorm   instance norm over H x W with `eps` (biased variance, as torch), then `scale` and `bias` if
          the layer is affine
  affine  x * scale + bias per channel: batch norm in eval (running statistics folded in)
  relu, lrelu (`slope`), tanh
  add     inputs[0] + inputs[1] (the ResNet residual); cat: channel concatenation (the U-Net skips)
Dropout and identities are no ops in eval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

KINDS = ("pad", "conv", "convT", "inorm", "affine", "relu", "lrelu", "tanh", "add", "cat")
POINTWISE = ("inorm", "affine", "relu", "lrelu", "tanh")


@dataclass(frozen=True, eq=False)
class Op:
    kind: str  # one of KINDS
    inputs: tuple[str, ...]  # buffer names read
    output: str  # the buffer name written (each name is written once)
    weight: torch.Tensor | None = None  # conv, convT: float32 on the CPU
    bias: torch.Tensor | None = None  # conv, convT bias; inorm's beta; affine's shift: (C,)
    scale: torch.Tensor | None = None  # inorm's gamma; affine's scale: (C,)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    output_padding: tuple[int, int] = (0, 0)  # convT
    groups: int = 1
    eps: float = 1e-5  # inorm
    slope: float = 0.0  # lrelu

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:]) if self.weight is not None else (1, 1)


@dataclass
class Program:
    ops: list[Op]
    output: str  # the name of the translated image's buffer
    in_channels: int
    size_multiple: int  # H and W must be multiples of this (the product of the downsamplings' strides)
    name: str = "generator"  # for the log line
    input: str = "x"


@dataclass
class Segment:
    """The ops from one instance norm (or the start) up to the next one."""

    ops: list[Op]
    inputs: list[str] = field(default_factory=list)  # buffers from earlier segments (or the image)
    outputs: list[str] = field(default_factory=list)  # buffers later segments read (or the result)
    stats: list[str] = field(default_factory=list)  # outputs a later instance norm normalises


def segments(program: Program) -> list[Segment]:
    """The program cut before every instance norm, each segment told what crosses its borders."""
    cut: list[list[Op]] = [[]]
    for op in program.ops:
        if op.kind == "inorm" and cut[-1]:
            cut.append([])
        cut[-1].append(op)
    made_in = {program.input: -1}
    for i, ops in enumerate(cut):
        for op in ops:
            made_in[op.output] = i
    segs = [Segment(ops) for ops in cut]
    for i, seg in enumerate(segs):
        for op in seg.ops:
            for name in op.inputs:
                j = made_in[name]
                if j < i:
                    if name not in seg.inputs:
                        seg.inputs.append(name)
                    if j >= 0 and name not in segs[j].outputs:
                        segs[j].outputs.append(name)
                if op.kind == "inorm":
                    if j < 0:
                        raise ValueError("an instance norm on the program's input cannot be tiled")
                    if name not in segs[j].stats:
                        segs[j].stats.append(name)
    segs[made_in[program.output]].outputs.append(program.output)
    return segs


def channels(program: Program) -> dict[str, int]:
    """Each buffer's channel count, for `program.in_channels` input channels."""
    c = {program.input: program.in_channels}
    for op in program.ops:
        if op.kind == "conv":
            c[op.output] = op.weight.shape[0]
        elif op.kind == "convT":
            c[op.output] = op.weight.shape[1] * op.groups
        elif op.kind == "cat":
            c[op.output] = sum(c[i] for i in op.inputs)
        else:
            c[op.output] = c[op.inputs[0]]
    return c


class _Lowering:
    """Walks a generator's module tree, emitting ops; returns each module's output buffer name."""

    def __init__(self):
        self.ops: list[Op] = []

    def emit(self, kind: str, inputs: tuple[str, ...], **params) -> str:
        name = f"{kind}{len(self.ops)}"
        self.ops.append(Op(kind, inputs, name, **params))
        return name

    def lower(self, m: nn.Module, x: str) -> str:
        # Imported here: fastcycle.models imports the whole model zoo; the lowering needs its classes.
        from fastcycle.models import (
            DCGANGenerator,
            MobileResnetBlock,
            ResnetBlock,
            ResnetGenerator,
            UnetGenerator,
            UnetSkipConnectionBlock,
        )
        from fastcycle.models.fused import FusedInstanceNorm2d, ReflectConv2d
        from fastcycle.models.mobile import SeparableConv2d

        t = lambda p: p.detach().float().cpu().clone() if p is not None else None  # noqa: E731
        if isinstance(m, DCGANGenerator):
            raise ValueError("a DCGAN generator maps noise to 64x64 images; there is no image to tile")
        if isinstance(m, nn.Sequential):
            for child in m:
                x = self.lower(child, x)
            return x
        if isinstance(m, ResnetBlock) and m.fused_residual:
            *body, last = m.conv_block
            h = self.lower(nn.Sequential(*body), x)
            return self.emit("add", (x, self.lower(last, h)))
        if isinstance(m, (ResnetBlock, MobileResnetBlock)):
            return self.emit("add", (x, self.lower(m.conv_block, x)))
        if isinstance(m, SeparableConv2d):
            return self.lower(m.conv, x)
        if isinstance(m, UnetSkipConnectionBlock):
            # The block's in-place LeakyReLU rewrites x before the reference concatenates it; the parent's
            # ReLU that follows the concatenation makes that invisible (ReLU(LeakyReLU(x)) = ReLU(x)), so
            # the program concatenates x itself.
            y = self.lower(m.model, x)
            return y if m.outermost else self.emit("cat", (x, y))
        if isinstance(m, (ResnetGenerator, UnetGenerator)):  # the mobile generator is a ResnetGenerator
            return self.lower(m.model, x)
        if isinstance(m, ReflectConv2d):
            r = m.reflect
            x = self.emit("pad", (x,), pads=(r, r, r, r))
            return self.emit("conv", (x,), weight=t(m.weight), bias=t(m.bias))
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or m.dilation != (1, 1) or isinstance(m.padding, str):
                raise ValueError(f"cannot tile {m}: only zero padding, no dilation")
            (ph, pw) = m.padding
            return self.emit(
                "conv", (x,), weight=t(m.weight), bias=t(m.bias), stride=m.stride, pads=(ph, ph, pw, pw),
                groups=m.groups,
            )  # fmt: skip
        if isinstance(m, nn.ConvTranspose2d):
            (ph, pw), op = m.padding, m.output_padding
            if m.dilation != (1, 1) or op[0] > ph or op[1] > pw:
                raise ValueError(f"cannot tile {m}: no dilation, output_padding <= padding")
            return self.emit(
                "convT", (x,), weight=t(m.weight), bias=t(m.bias), stride=m.stride, pads=(ph, ph, pw, pw),
                output_padding=op, groups=m.groups,
            )  # fmt: skip
        if isinstance(m, nn.ReflectionPad2d):
            left, right, top, bottom = m.padding
            return self.emit("pad", (x,), pads=(top, bottom, left, right))
        if isinstance(m, nn.InstanceNorm2d) and not (m.track_running_stats and m.running_mean is not None):
            x = self.emit("inorm", (x,), eps=m.eps, scale=t(m.weight), bias=t(m.bias))
            return self.emit("relu", (x,)) if isinstance(m, FusedInstanceNorm2d) and m.relu else x
        if isinstance(m, nn.modules.batchnorm._NormBase):  # batch norm in eval: running statistics
            scale = t(m.running_var).add(m.eps).rsqrt()
            if m.weight is not None:
                scale = scale * t(m.weight)
            shift = -t(m.running_mean) * scale + (t(m.bias) if m.bias is not None else 0)
            return self.emit("affine", (x,), scale=scale, bias=shift)
        if isinstance(m, nn.ReLU):
            return self.emit("relu", (x,))
        if isinstance(m, nn.LeakyReLU):
            return self.emit("lrelu", (x,), slope=m.negative_slope)
        if isinstance(m, nn.Tanh):
            return self.emit("tanh", (x,))
        if isinstance(m, (nn.Dropout, nn.Identity)):  # dropout is the identity in eval
            return x
        raise ValueError(f"cannot tile a generator with a {type(m).__name__} layer")


def size_multiple(ops: list[Op], input: str = "x") -> int:
    """The largest total downsampling of any buffer: what H and W must divide by."""
    down = {input: 1}
    for op in ops:
        d = down[op.inputs[0]]
        down[op.output] = (
            d * op.stride[0] if op.kind == "conv" else d // op.stride[0] if op.kind == "convT" else d
        )
    return max(down.values())


def program_from_module(net: nn.Module) -> Program:
    """The eval-mode program of a generator from fastcycle.models.build_generator (net.spec its row):
    ResNet (torch or Triton kernels: the same ops), mobile ResNet, U-Net, any norm. ValueError for
    DCGAN (noise in, not an image) and for layers the program has no op for."""
    spec = getattr(net, "spec", None)
    if spec is not None and spec.noise:
        raise ValueError("a DCGAN generator maps noise to 64x64 images; there is no image to tile")
    lowering = _Lowering()
    out = lowering.lower(net, "x")
    first = next(op for op in lowering.ops if op.kind in ("conv", "convT"))
    multiple = spec.size_multiple if spec is not None else size_multiple(lowering.ops)
    c_in = first.weight.shape[1] * first.groups if first.kind == "conv" else first.weight.shape[0]
    return Program(
        lowering.ops, out, c_in, multiple, name=spec.name if spec is not None else type(net).__name__
    )
