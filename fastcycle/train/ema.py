"""Exponential moving average of generator weights (Karras et al.), for smoother samples and exports."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        # One multi-tensor kernel for all parameters instead of a launch per tensor.
        torch._foreach_lerp_(
            list(self.net.parameters()), [p.detach() for p in net.parameters()], 1.0 - self.decay
        )
        for b_ema, b in zip(self.net.buffers(), net.buffers(), strict=True):  # BatchNorm statistics
            b_ema.copy_(b)
