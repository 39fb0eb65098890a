"""Normalisation layers, chosen by name as in the reference's `get_norm_layer`."""

import functools

from torch import nn

from fastcycle.config import NORMS


def get_norm_layer(norm: str):
    """Return a constructor `norm_layer(num_features) -> nn.Module`.

    instance: InstanceNorm2d without affine parameters or running statistics (the reference's choice);
    batch: BatchNorm2d with affine parameters and running statistics; none: identity.
    """
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
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
