"""`--model`: which family a config trains, built from one place for the loop, FLOPs and export."""

from __future__ import annotations

import torch

from fastcycle.config import TrainConfig
from fastcycle.errors import UserError
from fastcycle.models import N_BLOCKS
from fastcycle.runtime import Precision
from fastcycle.train.distributed import DistInfo


def model_kernels(cfg: TrainConfig, kernels: str, note: str) -> tuple[str, str]:
    """The resolved --kernels for this config: the fused Triton kernels implement the ResNet
    generator's layers only, so other generators run on torch's (cuDNN) layers."""
    if kernels == "torch" or cfg.model.netG in N_BLOCKS:  # N_BLOCKS: the ResNet generators
        return kernels, note
    if cfg.runtime.kernels == "triton":
        raise UserError(
            f"--kernels triton implements the ResNet generators' layers, not --netG {cfg.model.netG}; "
            "use --kernels torch or auto"
        )
    return "torch", f"kernels: torch (the fused kernels cover the ResNet generators, not {cfg.model.netG})"


def build_model(
    cfg: TrainConfig,
    device: torch.device,
    precision: Precision,
    kernels: str = "torch",
    dist_info: DistInfo | None = None,
    labels: tuple[torch.Tensor, torch.Tensor] | None = None,
    n_classes: int = 0,
):
    """A freshly initialised CycleGAN, Pix2Pix or DCGAN (fastcycle.train.gan.GANModel) for cfg."""
    family = cfg.model.model
    if family == "pix2pix":
        from fastcycle.train.pix2pix import Pix2Pix

        return Pix2Pix(cfg, device, precision, kernels, dist_info)
    if family == "dcgan":
        from fastcycle.train.dcgan import DCGAN

        return DCGAN(cfg, device, precision, kernels, dist_info)
    from fastcycle.train.step import CycleGAN

    return CycleGAN(cfg, device, precision, kernels, dist_info, labels, n_classes)
