"""The generator architectures by --netG name, torch-free: one row each, the one statement of what a
generator is (its family, residual blocks or downsamplings, its mobile counterpart) and what follows
from it (the size its input must divide by, whether it takes noise, whether the fused kernels cover it).

The config's validation, build_generator (which gives every generator it builds its row as `net.spec`),
the runners, export and distillation all ask this table.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("resnet", "mobile_resnet", "unet", "dcgan")


@dataclass(frozen=True)
class GeneratorSpec:
    name: str  # the --netG value
    family: str  # one of FAMILIES: mobile_resnet is GAN Compression's, with depthwise-separable blocks
    n_blocks: int = 0  # residual blocks (the ResNets)
    num_downs: int = 0  # stride-2 downsamplings down to the 1x1 bottleneck (the U-Nets)
    mobile: str | None = None  # the mobile ResNet with the same blocks (a dense ResNet's distilled student)

    @property
    def resnet(self) -> bool:
        """A dense or mobile ResNet: the same stem, downsamplings and residual chain (tap points)."""
        return self.family in ("resnet", "mobile_resnet")

    @property
    def noise(self) -> bool:
        """Noise in, 64x64 images out (DCGAN), instead of an image translator."""
        return self.family == "dcgan"

    @property
    def fused_kernels(self) -> bool:
        """Whether --kernels triton applies: the fused kernels implement the dense ResNet block's layers."""
        return self.family == "resnet"

    @property
    def size_multiple(self) -> int | None:
        """What the input's H and W must be multiples of: each stride-2 downsampling halves them, twice
        in the ResNets, num_downs times in a U-Net; None for DCGAN, whose input is noise."""
        if self.noise:
            return None
        return 2**self.num_downs if self.family == "unet" else 4


GENERATOR_SPECS = {
    spec.name: spec
    for spec in (
        GeneratorSpec("resnet_9blocks", "resnet", n_blocks=9, mobile="mobile_resnet_9blocks"),
        GeneratorSpec("resnet_6blocks", "resnet", n_blocks=6, mobile="mobile_resnet_6blocks"),
        GeneratorSpec("mobile_resnet_9blocks", "mobile_resnet", n_blocks=9),
        GeneratorSpec("mobile_resnet_6blocks", "mobile_resnet", n_blocks=6),
        GeneratorSpec("unet_256", "unet", num_downs=8),
        GeneratorSpec("unet_128", "unet", num_downs=7),
        GeneratorSpec("dcgan", "dcgan"),
    )
}
assert all(s.family in FAMILIES and s.mobile in (None, *GENERATOR_SPECS) for s in GENERATOR_SPECS.values())
