"""Generators and discriminators with the reference implementation's architecture and state-dict keys."""

from torch import nn

from fastcycle.config import DISCRIMINATORS, GENERATORS, INIT_TYPES, NORMS
from fastcycle.models.discriminators import NLayerDiscriminator
from fastcycle.models.generators import ResnetBlock, ResnetGenerator
from fastcycle.models.init import init_weights

N_BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}  # generator name -> residual blocks
assert tuple(N_BLOCKS) == GENERATORS

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "INIT_TYPES",
    "NORMS",
    "NLayerDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "build_discriminator",
    "build_generator",
    "init_weights",
]


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
) -> nn.Module:
    """A freshly initialised generator: `resnet_9blocks` (256x256 default) or `resnet_6blocks`.

    kernels="triton" runs it on fastcycle's fused Triton kernels, with the same parameters and keys.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    net = ResnetGenerator(input_nc, output_nc, ngf, norm, dropout, n_blocks=N_BLOCKS[name], kernels=kernels)
    return init_weights(net, init_type, init_gain)


def build_discriminator(
    name: str,
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
    input_nc: int = 3,
) -> nn.Module:
    """A freshly initialised PatchGAN: `basic` (3 layers, 70x70 patches) or `n_layers` (`n_layers` deep)."""
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; choose one of {', '.join(DISCRIMINATORS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    net = NLayerDiscriminator(input_nc, ndf, 3 if name == "basic" else n_layers, norm)
    return init_weights(net, init_type, init_gain)
