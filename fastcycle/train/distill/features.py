"""Feature distillation, as GAN Compression does it: the student's activations at a few points of its
generator are mapped by learned 1x1 convolutions (the adapters) to the teacher's channel count at the
matching points, and compared with an L2 loss.

Tap points, by generator layout (the same for the dense and the mobile ResNet, for any ngf):
- ResNet: the input of the residual blocks (after the second downsampling) and the outputs of the
  blocks at 1/3, 2/3 and 3/3 of the chain: GAN Compression's `model.9`, `model.12`, `model.15`,
  `model.18` for 9 blocks; (N, 4 ngf, H/4, W/4) each.
- U-Net: the outputs of the three outermost inner blocks (skip concatenation included):
  (N, 2 ngf, H/2, W/2), (N, 4 ngf, H/4, W/4), (N, 8 ngf, H/8, W/8), the same for unet_128 and unet_256.
A teacher and a student of the same layout therefore have tap outputs of the same H and W, and a 1x1
conv aligns their channels; across layouts (a U-Net teacher, a ResNet student) only the outputs are
distilled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.models import (
    MobileResnetBlock,
    ResnetBlock,
    ResnetGenerator,
    UnetGenerator,
    build_generator,
)


def layout_of(netG: str) -> str | None:
    """'resnet' (dense or mobile), 'unet', or None for a generator without tap points (DCGAN)."""
    spec = GENERATOR_SPECS[netG]
    if spec.resnet:
        return "resnet"
    return "unet" if spec.family == "unet" else None


def tap_points(net: nn.Module) -> list[str]:
    """Names (as in net.named_modules()) of the modules whose outputs are distilled."""
    if isinstance(net, ResnetGenerator):
        blocks = [i for i, m in enumerate(net.model) if isinstance(m, ResnetBlock | MobileResnetBlock)]
        n = len(blocks)
        picks = [blocks[0] - 1] + [blocks[max(round(k * n / 3), 1) - 1] for k in (1, 2, 3)]
        return [f"model.{i}" for i in picks]
    if isinstance(net, UnetGenerator):
        # The outermost block's submodule is its child 1; every inner block's is its child 3.
        return ["model.model.1", "model.model.1.model.3", "model.model.1.model.3.model.3"]
    return []


class FeatureTaps:
    """Forward hooks that keep the outputs of the named modules of `net` from its latest call."""

    def __init__(self, net: nn.Module, names: list[str]):
        modules = dict(net.named_modules())
        self.names = names
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            self.outputs[name] = output

        return hook

    def take(self) -> list[torch.Tensor]:
        """The latest outputs in tap order, forgotten here so they do not outlive the step."""
        return [self.outputs.pop(n) for n in self.names]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def tap_shapes(netG: str, ngf: int, norm: str, size: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of each tap output of generator `netG` for a size x size input, computed on the meta
    device: shapes only, no memory, no arithmetic."""
    with torch.device("meta"):
        probe = build_generator(netG, ngf=ngf, norm=norm)
        taps = FeatureTaps(probe, tap_points(probe))
        probe(torch.empty(1, 3, size, size))
    return [tuple(t.shape[1:]) for t in taps.take()]


class FeatureAdapters(nn.Module):
    """One 1x1 conv per tap, student channels -> teacher channels: (N, C_s, h, w) -> (N, C_t, h, w)."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int]):
        super().__init__()
        pairs = zip(student_channels, teacher_channels, strict=True)
        self.convs = nn.ModuleList(nn.Conv2d(s, t, kernel_size=1) for s, t in pairs)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, feats, strict=True)]


def feature_loss(adapted: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over taps of the mean squared error, in fp32 (GAN Compression's calc_distill_loss)."""
    return sum(F.mse_loss(s.float(), t.float()) for s, t in zip(adapted, teacher, strict=True))
