"""`--model`: which family a config trains, built from one place for the loop, FLOPs and export."""

from __future__ import annotations

import torch

from fastcycle.config import TrainConfig
from fastcycle.train.env import ModelEnv
from fastcycle.train.gan import GANModel


def model_family(cfg: TrainConfig) -> type[GANModel]:
    """The GANModel subclass of cfg's --model; each family's module is imported only when used."""
    family = cfg.model.model
    if family == "pix2pix":
        from fastcycle.train.pix2pix import Pix2Pix

        return Pix2Pix
    if family == "dcgan":
        from fastcycle.train.dcgan import DCGAN

        return DCGAN
    if family == "distill":
        from fastcycle.train.distill.model import Distiller

        return Distiller
    from fastcycle.train.cyclegan import CycleGAN

    return CycleGAN


def build_model(
    cfg: TrainConfig,
    env: ModelEnv,
    *,
    labels: tuple[torch.Tensor, torch.Tensor] | None = None,
    n_classes: int = 0,
) -> GANModel:
    """A freshly initialised CycleGAN, Pix2Pix, DCGAN or Distiller for cfg, on env. labels, n_classes:
    CycleGAN's class heads (--aux-classifier), from its DataSource; the other families take none."""
    classes = dict(labels=labels, n_classes=n_classes) if labels is not None else {}
    return model_family(cfg)(cfg, env, **classes)
