"""Learning-rate policies (`--lr-policy`), the reference's `get_scheduler`, stepped once per epoch.

linear, step and cosine are closed-form factors of the 0-based global epoch index, which starts at
`--epoch-count - 1`: a run continued from weights trained for N-1 epochs picks the schedule up where
that run left it (the reference applies --epoch_count to linear only; the same rule for all is what a
continued run expects). plateau reacts to a metric and keeps its state in the checkpoint.
"""

from __future__ import annotations

import math

import torch

from fastcycle.config import OptimConfig

# The reference's ReduceLROnPlateau parameters: x0.2 after 5 epochs without a 1% improvement.
PLATEAU = dict(mode="min", factor=0.2, threshold=0.01, patience=5)


def linear_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """LR multiplier for 0-based `epoch`: 1 for the first n_epochs, then linearly down towards 0.

    The reference's rule `1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1)` with
    epoch_count = 1: epoch n_epochs runs at n_decay/(n_decay+1), the last one at 1/(n_decay+1).
    """
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


def step_factor(epoch: int, lr_decay_iters: int) -> float:
    """x0.1 every lr_decay_iters epochs (the reference's StepLR(step_size=lr_decay_iters, gamma=0.1))."""
    return 0.1 ** (epoch // lr_decay_iters)


def cosine_factor(epoch: int, n_epochs: int) -> float:
    """The closed form of the reference's CosineAnnealingLR(T_max=n_epochs, eta_min=0)."""
    return (1.0 + math.cos(math.pi * epoch / n_epochs)) / 2.0


def build_scheduler(optimizer: torch.optim.Optimizer, o: OptimConfig):
    """The `--lr-policy` scheduler for `optimizer`; call `step_scheduler` at the end of every epoch."""
    if o.lr_policy == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **PLATEAU)
    first = o.epoch_count - 1

    def factor(run_epoch: int) -> float:
        # A function, not an object: LambdaLR then leaves it out of its state dict, so a resumed run
        # follows the command line's --n-epochs etc., not the values the first run was started with.
        epoch = first + run_epoch
        if o.lr_policy == "linear":
            return linear_factor(epoch, o.n_epochs, o.n_epochs_decay)
        if o.lr_policy == "step":
            return step_factor(epoch, o.lr_decay_iters)
        return cosine_factor(epoch, o.n_epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_scheduler(scheduler, metric: float | None) -> None:
    """End of an epoch: plateau reads `metric` (the epoch's mean generator loss), the others ignore it."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()


def linear_scheduler(optimizer: torch.optim.Optimizer, n_epochs: int, n_epochs_decay: int):
    """The reference's default policy: constant for n_epochs, then linear to zero."""
    return build_scheduler(optimizer, OptimConfig(n_epochs=n_epochs, n_epochs_decay=n_epochs_decay))
