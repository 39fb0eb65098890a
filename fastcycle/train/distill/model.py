"""Distillation as a model family on the training engine (fastcycle.train.gan.GANModel): a frozen
teacher generator and a student trained to reproduce it, as GAN Compression (Li et al. 2020) does.

The student's loss: lambda_recon x L1(student(x), teacher(x)), plus lambda_distill x the feature loss
(fastcycle.train.distill.features: adapted student activations vs the teacher's, L2), plus with
lambda_gan > 0 the adversarial loss against a discriminator started from the teacher's, which in turn
learns real output-domain images (Batch.B) from the student's. Trained networks: "G" the student and "A"
the adapters (opt_G; EMA for G only), "D" (opt_D). The teacher is in eval mode, outside the optimizers
and the checkpoint's networks; the config names it by path and checksum.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastcycle.config import ModelConfig, TrainConfig
from fastcycle.errors import UserError
from fastcycle.losses import gan_loss, l1
from fastcycle.models import build_generator, init_weights
from fastcycle.train.data import DataSource
from fastcycle.train.distill.data import open_student_data
from fastcycle.train.distill.features import (
    FeatureAdapters,
    FeatureTaps,
    feature_loss,
    tap_points,
    tap_shapes,
)
from fastcycle.train.distill.teacher import load_teacher, teacher_discriminator, teacher_generator
from fastcycle.train.env import ModelEnv, RunEnv
from fastcycle.train.gan import GANModel
from fastcycle.train.samples import save_distill_grid


class Distiller(GANModel):
    def __init__(self, cfg: TrainConfig, env: ModelEnv):
        di = cfg.distill
        self._teacher_state, self._teacher_cfg = load_teacher(cfg)  # read once, checksum checked
        self.conditional = self._teacher_cfg.model.model == "pix2pix"  # D judges (input, output) pairs
        self.features, self.gan = di.lambda_distill > 0, di.lambda_gan > 0
        self.generators = ("G", "A") if self.features else ("G",)
        self.discriminators = ("D",) if self.gan else ()
        super().__init__(cfg, env)
        self.ema.pop("A", None)  # the adapters serve training only
        memory_format = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
        self.teacher = teacher_generator(
            self._teacher_state, self._teacher_cfg, cfg.data.direction, env.kernels, di.teacher
        ).to(env.device, memory_format=memory_format)
        del self._teacher_state  # the teacher's optimizer state and other networks are not needed
        if cfg.runtime.compile:
            self.teacher.compile(dynamic=False, fullgraph=True)  # as the student (GANModel)
        if self.features:  # hooks on the student module itself: its DDP wrapper and EMA copy have none
            self.teacher_taps = FeatureTaps(self.teacher, tap_points(self.teacher))
            self.student_taps = FeatureTaps(self.nets["G"], tap_points(self.nets["G"]))

    def build_nets(self, m: ModelConfig, kernels: str) -> dict[str, nn.Module]:
        """The student "G", with feature distillation its adapters "A", with a GAN loss the
        discriminator "D" (the teacher's weights)."""
        t, size = self._teacher_cfg.model, self.cfg.data.crop_size
        init = dict(init_type=m.init_type, init_gain=m.init_gain)
        channels = dict(input_nc=m.input_nc, output_nc=m.output_nc)
        nets = {"G": build_generator(m.netG, ngf=m.ngf, norm=m.norm, kernels=kernels, **channels, **init)}
        if self.features:
            student = [c for c, _, _ in tap_shapes(m.netG, m.ngf, m.norm, size)]
            teacher = [c for c, _, _ in tap_shapes(t.netG, t.ngf, t.norm, size)]
            nets["A"] = init_weights(FeatureAdapters(student, teacher), **init)  # GAN Compression: N(0, 0.02)
        if self.gan:
            nets["D"] = teacher_discriminator(self._teacher_state, self._teacher_cfg, self.cfg.data.direction)
        return nets

    @property
    def loss_names(self) -> tuple[str, ...]:
        names = ("G_recon", *("G_distill",) * self.features)
        return (*names, "G_gan", "D_real", "D_fake", *self._gp_names()) if self.gan else names

    @classmethod
    def open_data(cls, cfg: TrainConfig, root: Path, env: RunEnv, state: dict | None) -> DataSource:
        """The teacher's training data under `root`, its input domain as Batch.A (held-out images kept
        out and listed in the run folder for the report)."""
        return open_student_data(cfg, root, env, state)

    def _judged(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """What D sees: the output alone, or (input, output) stacked (a pix2pix teacher's D)."""
        return torch.cat([source, output], 1) if self.conditional else output

    def train_step(
        self, real_A: torch.Tensor, real_B: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One iteration on (N, input_nc, H, W) source images in [-1, 1]; real_B: real output-domain
        images (or the pairs' targets), read only by the discriminator. Returns the detached losses and
        the skip flag, on the device (no host sync)."""
        di, gan_mode = self.cfg.distill, self.cfg.loss.gan_mode
        losses: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self.autocast():
            target = self.teacher(real_A)  # (N, output_nc, H, W); the teacher's taps fire here
        self._freeze_discriminators()
        with self.autocast():
            (fake,) = self._calls("G", real_A)
            losses["G_recon"] = l1(fake, target) * di.lambda_recon
            if self.features:
                (adapted,) = self._calls("A", self.student_taps.take())
                losses["G_distill"] = feature_loss(adapted, self.teacher_taps.take()) * di.lambda_distill
            if self.gan:
                (judged,) = self._calls("D", self._judged(real_A, fake))
                losses["G_gan"] = gan_loss(judged, True, gan_mode) * di.lambda_gan
            loss_G = sum(losses.values())
        skipped = self._generator_step(loss_G)

        if self.gan:  # D: real output-domain images vs the student's
            real = self._judged(real_A, real_B)
            # A skipped step's fake may be non-finite: D must not learn from it (no sync: on the device).
            fake = self._judged(real_A, fake.detach().nan_to_num(0.0, 1.0, -1.0))
            parts, bad_D = self._discriminator_step({"D": (real, fake)})
            losses |= parts["D"]
            skipped = skipped | bad_D
        return self._end_step(losses, skipped)

    def sample_inputs(self, batch) -> tuple:
        return (batch.A[:4].clone(),)

    def save_samples(self, inputs: tuple, path) -> np.ndarray:
        return save_distill_grid(self, *inputs, path)

    def extra_state(self) -> dict:
        return {"distill": dataclasses.asdict(self.cfg.distill)}

    def load_extra_state(self, state: dict) -> None:
        saved, ours = state["distill"], dataclasses.asdict(self.cfg.distill)
        if saved["teacher_sha256"] != ours["teacher_sha256"] or saved["teacher"] != ours["teacher"]:
            raise UserError(
                f"--resume: this run distils {saved['teacher']} as it was when the run started, and that "
                "teacher has changed or another is given; resume with that one or distil into another --out"
            )
        if saved != ours:
            raise UserError("--resume: the distill options (--lambda-*) differ from the run's saved ones")
