"""The generator's layers on fastcycle's Triton kernels, with the torch layers' state-dict keys.

`--kernels triton` builds the same module tree as `--kernels torch`, index for index, so checkpoints,
export and the switch are interchangeable: a reflection pad and the conv after it become an
`nn.Identity` and a `ReflectConv2d` (the pad folded into the conv's indexing); an instance norm and the
ReLU after it become a `FusedInstanceNorm2d` and an `nn.Identity`. Pads, ReLUs and identities hold no
state, so the keys (`model.1.weight`, `model.10.conv_block.5.bias`, ...) do not change.

fastcycle.kernels (and with it triton) is imported on first use, so `--kernels torch` never needs it.
"""

import torch
from torch import nn

from fastcycle.choices import KERNEL_CHOICES

KERNELS = tuple(k for k in KERNEL_CHOICES if k != "auto")  # what a network is built with, once resolved


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a conv in: autocast does not cast the inputs of our custom ops."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class ReflectConv2d(nn.Conv2d):
    """`Conv2d(ReflectionPad2d(reflect)(x))` in one Triton kernel that never writes the padded tensor."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, reflect: int, bias: bool = True
    ):
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.reflect = reflect

    def forward(self, x):  # (N, C_in, H, W) -> (N, C_out, H, W) for odd kernels with reflect = k // 2
        from fastcycle.kernels.reflect_conv import reflect_conv2d

        dtype = _autocast_dtype(x)
        bias = None if self.bias is None else self.bias.to(dtype)
        return reflect_conv2d(x.to(dtype), self.weight.to(dtype), bias, padding=self.reflect)

    def extra_repr(self):
        return super().extra_repr() + f", reflect={self.reflect}"


class FusedInstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm2d (+ ReLU) (+ a residual added after it) in one read-normalise-write pass."""

    def __init__(self, num_features: int, relu: bool = False, affine: bool = False):
        super().__init__(num_features, affine=affine, track_running_stats=False)
        self.relu = relu

    def forward(self, x, residual=None):  # (N, C, H, W), layout kept
        from fastcycle.kernels.instance_norm import instance_norm

        return instance_norm(x, self.weight, self.bias, residual=residual, relu=self.relu, eps=self.eps)

    def extra_repr(self):
        return super().extra_repr() + f", relu={self.relu}"


def reflect_conv(reflect: int, c_in: int, c_out: int, kernel_size: int, bias: bool, kernels: str):
    """[ReflectionPad2d, Conv2d], or its fused equivalent in the same two slots."""
    if kernels == "triton":
        return [nn.Identity(), ReflectConv2d(c_in, c_out, kernel_size, reflect, bias=bias)]
    return [nn.ReflectionPad2d(reflect), nn.Conv2d(c_in, c_out, kernel_size=kernel_size, bias=bias)]


def norm_relu(norm_layer, norm: str, dim: int, kernels: str):
    """[norm, ReLU], fused into the norm's slot when the norm is instance norm and kernels are Triton."""
    if kernels == "triton" and norm == "instance":
        return [FusedInstanceNorm2d(dim, relu=True), nn.Identity()]
    return [norm_layer(dim), nn.ReLU(True)]


def check_kernels(kernels: str) -> None:
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
