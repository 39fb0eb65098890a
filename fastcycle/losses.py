"""The GAN objectives (LSGAN, vanilla, WGAN-GP with its gradient penalty), L1, and the class loss of the
semi-supervised discriminators."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def gan_loss(
    prediction: torch.Tensor,
    target_is_real: bool,
    gan_mode: str,
    real_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Mean over all PatchGAN logits of the loss against a target (1 for real, 0 for fake).

    lsgan: mean((D(x) - t)^2) (Mao et al. 2017, the paper's choice); vanilla: BCE with logits;
    wgangp: -mean(D(x)) for real, mean(D(x)) for fake (the critic's score; the penalty is separate).
    real_range: one-sided label smoothing, real targets drawn per logit from U[lo, hi] (Salimans et al.
    2016; fakes keep 0). Only the discriminator's own loss passes it; wgangp has no targets to smooth.
    Computed in fp32 whatever the autocast dtype: the mean over many patches loses bits in bf16.
    """
    prediction = prediction.float()
    if gan_mode == "wgangp":
        return -prediction.mean() if target_is_real else prediction.mean()
    if target_is_real and real_range is not None:
        lo, hi = real_range
        target = torch.empty_like(prediction).uniform_(lo, hi) if hi > lo else torch.full_like(prediction, lo)
    else:
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
    if gan_mode == "lsgan":
        return (prediction - target).square().mean()
    if gan_mode == "vanilla":
        return F.binary_cross_entropy_with_logits(prediction, target)
    raise ValueError(f"unknown gan_mode {gan_mode!r}")


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean over the batch of (||grad_x D(x)||_2 - 1)^2 at random points
    x on the lines between real and fake images, one mixing weight per image (the reference's
    `cal_gradient_penalty`, type "mixed", constant 1; the caller multiplies by lambda_gp).

    create_graph=True: the penalty's own gradient reaches D's weights (a double backward). `critic` must
    be an eager callable: torch.compile's graphs do not support a double backward.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    # fp32 interpolates: under autocast the fakes arrive in bf16/fp16 and the reals in fp32.
    x = torch.lerp(real.detach().float(), fake.detach().float(), alpha).requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
    norms = (grad.float().flatten(1).square().sum(1) + 1e-16).sqrt()  # eps: a finite gradient at 0
    return (norms - 1.0).square().mean()


def class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled images only (label -1: unlabelled), 0 when none is labelled.

    A sum over the labelled ones divided by their count (at least 1), rather than PyTorch's mean with
    ignore_index, which is NaN for a batch without labels and would trip the non-finite guard.
    """
    labelled = labels >= 0
    ce = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    return (ce * labelled).sum() / labelled.sum().clamp(min=1)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in fp32 (cycle, identity and pix2pix's L1 losses)."""
    return (x.float() - y.float()).abs().mean()
