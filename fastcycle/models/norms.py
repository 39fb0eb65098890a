"""Normalisation layers, chosen by name as in the reference's `get_norm_layer`."""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from fastcycle.choices import NORMS

# torch's channels-last CPU group-norm kernel sums x and x^2 in float32 and takes E[x^2] - E[x]^2, which
# cancels when a plane's mean is large against its spread, more so the larger the plane. Max error
# against float64 instance norm, 16 channels, mean 5 std: 5e-4 at 256x256, 1.1e-3 at 512x512, 2e-3 at
# 1024x1024 (a 4096x4096 translation came out 24 dB from the NCHW forward). With the plane's mean taken
# off first (group norm re-centres, so the result is the same) nothing cancels: 5e-5 at 512x512. That
# costs a pass and a copy (the mobile student at 256x256: 18.2 -> 12.9 images/s), so it is done from
# 512x512 on; below, the kernel's error stays under a tenth of an 8-bit output level (7.8e-3).
CENTRE_FROM = 512 * 512


def _cancels(x: torch.Tensor) -> bool:
    """Whether group norm on x would sum a large channels-last plane in float32 (see CENTRE_FROM)."""
    return (
        x.dim() == 4
        and x.shape[2] * x.shape[3] >= CENTRE_FROM
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


class InstanceNorm2d(nn.InstanceNorm2d):
    """The reference's InstanceNorm2d (no affine parameters, no running statistics), faster on CPU inference.

    Instance norm is group norm with one group per channel: the same per-(image, channel) mean and
    variance, the same eps. torch's CPU `instance_norm` reshapes the batch into one and calls batch
    norm, 3-5x slower than its `group_norm` kernel at the generators' shapes (measured: 2.06 vs 0.43 ms
    at 1x32x256x256 on the 2-core CPU), and in a mobile generator the norms are ~40% of the eager time.
    So eager CPU calls without autograd (translate, evaluation, the distillation report) take the group
    norm kernel. Training keeps `instance_norm` (its backward and autocast rules are the reference's),
    and so does every traced graph (torch.compile, ONNX, AOTInductor: `is_compiling()` is true while
    exporting), so that the exported op is InstanceNormalization. Same class name and state dict.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            if _cancels(x):
                n, c, h, w = x.shape
                mean = x.permute(0, 2, 3, 1).reshape(n, h * w, c).mean(1)  # (N, C), a view's column means
                x = x - mean[:, :, None, None]
            return F.group_norm(x, self.num_features, eps=self.eps)
        return super().forward(x)


def get_norm_layer(norm: str):
    """Return a constructor `norm_layer(num_features) -> nn.Module`.

    instance: InstanceNorm2d without affine parameters or running statistics (the reference's choice);
    batch: BatchNorm2d with affine parameters and running statistics; none: identity.
    """
    if norm == "instance":
        return functools.partial(InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda num_features: nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def conv_bias(norm: str) -> bool:
    """The reference gives convolutions a bias only in front of instance norm.

    Batch norm's shift makes a bias redundant; with norm 'none' the reference's check
    (`norm_layer == nn.InstanceNorm2d`) is also false, so those convs have no bias either.
    """
    return norm == "instance"
