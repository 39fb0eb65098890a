"""Learning-rate policy: the reference's `linear` rule."""

from __future__ import annotations

import torch


def linear_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """LR multiplier for 0-based `epoch`: 1 for the first n_epochs, then linearly down towards 0.

    The reference's rule `1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1)` with
    epoch_count = 1: epoch n_epochs runs at n_decay/(n_decay+1), the last one at 1/(n_decay+1).
    """
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


def linear_scheduler(optimizer: torch.optim.Optimizer, n_epochs: int, n_epochs_decay: int):
    """Stepped once at the end of every epoch."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: linear_factor(epoch, n_epochs, n_epochs_decay)
    )
