"""CycleGAN's objectives: adversarial (LSGAN or vanilla), cycle consistency and identity."""

import torch
import torch.nn.functional as F


def gan_loss(prediction: torch.Tensor, target_is_real: bool, gan_mode: str) -> torch.Tensor:
    """Mean over all PatchGAN logits of the loss against a constant target (1 for real, 0 for fake).

    lsgan: mean((D(x) - t)^2) (Mao et al. 2017, the paper's choice); vanilla: BCE with logits.
    Computed in fp32 whatever the autocast dtype: the mean over many patches loses bits in bf16.
    """
    prediction = prediction.float()
    target = 1.0 if target_is_real else 0.0
    if gan_mode == "lsgan":
        return (prediction - target).square().mean()
    if gan_mode == "vanilla":
        return F.binary_cross_entropy_with_logits(prediction, torch.full_like(prediction, target))
    raise ValueError(f"unknown gan_mode {gan_mode!r}")


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in fp32 (cycle and identity losses)."""
    return (x.float() - y.float()).abs().mean()
