"""Generators and discriminators with the reference implementation's architecture and state-dict keys."""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from fastcycle.choices import DISCRIMINATORS, GENERATORS, INIT_TYPES, NORMS
from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.models.dcgan import DCGANDiscriminator, DCGANGenerator
from fastcycle.models.discriminators import NLayerDiscriminator, PixelDiscriminator
from fastcycle.models.fused import check_kernels
from fastcycle.models.generators import ResnetBlock, ResnetGenerator
from fastcycle.models.init import init_weights
from fastcycle.models.mobile import MobileResnetBlock, MobileResnetGenerator
from fastcycle.models.unet import UnetGenerator, UnetSkipConnectionBlock

CLASSIFYING_DISCRIMINATORS = ("basic", "n_layers")  # the ones that take an auxiliary head (n_classes)

__all__ = [
    "CLASSIFYING_DISCRIMINATORS",
    "DISCRIMINATORS",
    "GENERATORS",
    "INIT_TYPES",
    "NORMS",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MobileResnetBlock",
    "MobileResnetGenerator",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetGenerator",
    "UnetSkipConnectionBlock",
    "build_discriminator",
    "build_generator",
    "eval_mode",
    "init_weights",
]


@contextmanager
def eval_mode(*nets: nn.Module) -> Iterator[None]:
    """The networks in eval mode (dropout off, batch norm on its running statistics) within the block,
    each back in the mode it had afterwards, also when the block raises."""
    was = [n.training for n in nets]
    for n in nets:
        n.eval()
    try:
        yield
    finally:
        for n, w in zip(nets, was, strict=True):
            n.train(w)


def build_generator(
    name: str,
    ngf: int = 64,
    norm: str = "instance",
    dropout: bool = False,
    init_type: str = "normal",
    init_gain: float = 0.02,
    input_nc: int = 3,
    output_nc: int = 3,
    kernels: str = "torch",
    nz: int = 100,
) -> nn.Module:
    """A freshly initialised generator, its row of the generator table (fastcycle.generator_specs) as
    `net.spec`: what its input must be (`net.spec.size_multiple`, `net.spec.noise`).

    `resnet_9blocks` / `resnet_6blocks`: image -> image, H and W multiples of 4 (256x256 by default).
    `mobile_resnet_9blocks` / `mobile_resnet_6blocks`: the same with depthwise-separable residual blocks.
    `unet_256` / `unet_128`: image -> image, H and W multiples of 256 / 128.
    `dcgan`: noise (N, nz, 1, 1) or (N, nz) -> (N, output_nc, 64, 64); input_nc and dropout do not apply.

    kernels="triton" runs a ResNet generator on fastcycle's fused Triton kernels, with the same
    parameters and keys. The fused kernels cover only the ResNet generator's reflect-pad/conv and
    instance-norm/ReLU pairs; the mobile, U-Net and DCGAN generators accept the argument but always run
    on torch layers.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    check_kernels(kernels)
    spec = GENERATOR_SPECS[name]
    if spec.family == "resnet":
        net = ResnetGenerator(
            input_nc, output_nc, ngf, norm, dropout, n_blocks=spec.n_blocks, kernels=kernels
        )
    elif spec.family == "mobile_resnet":
        net = MobileResnetGenerator(input_nc, output_nc, ngf, norm, dropout, n_blocks=spec.n_blocks)
    elif spec.family == "unet":
        net = UnetGenerator(input_nc, output_nc, spec.num_downs, ngf, norm, dropout)
    else:
        net = DCGANGenerator(nz, ngf, output_nc, norm)
    net.spec = spec
    return init_weights(net, init_type, init_gain)


def build_discriminator(
    name: str,
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
    input_nc: int = 3,
    n_classes: int = 0,
) -> nn.Module:
    """A freshly initialised discriminator.

    `basic`: PatchGAN, 3 layers, 70x70 patches; `n_layers`: PatchGAN `n_layers` deep; `pixel`: 1x1
    PatchGAN; `dcgan`: one logit per 64x64 image. n_classes > 0 (basic and n_layers only) adds an
    auxiliary classification head, and the network then returns (patch_logits, class_logits).
    """
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; choose one of {', '.join(DISCRIMINATORS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if n_classes < 0:
        raise ValueError(f"n_classes must be >= 0, got {n_classes}")
    if n_classes and name not in CLASSIFYING_DISCRIMINATORS:
        raise ValueError(
            f"discriminator {name!r} has no classification head; n_classes needs one of "
            f"{', '.join(CLASSIFYING_DISCRIMINATORS)}"
        )
    if name in CLASSIFYING_DISCRIMINATORS:
        depth = 3 if name == "basic" else n_layers
        net = NLayerDiscriminator(input_nc, ndf, depth, norm, n_classes=n_classes)
    elif name == "pixel":
        net = PixelDiscriminator(input_nc, ndf, norm)
    else:
        net = DCGANDiscriminator(input_nc, ndf, norm)
    return init_weights(net, init_type, init_gain)
