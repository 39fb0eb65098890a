"""pix2pix (Isola et al. 2017): a U-Net generator and a conditional PatchGAN that judges (input, output)
pairs, trained with GAN + lambda_L1 x L1 to the paired target. The reference's `Pix2PixModel`: the
discriminator steps first, then the generator against the updated discriminator."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from fastcycle.config import ModelConfig, TrainConfig, parse_eval_every
from fastcycle.data.aligned import AlignedLoader, find_pairs
from fastcycle.data.contract import LoaderSpec
from fastcycle.losses import gan_loss, l1
from fastcycle.models import build_discriminator, build_generator
from fastcycle.train.data import DataSource, log_scans, spec_fields
from fastcycle.train.env import RunEnv
from fastcycle.train.gan import GANModel
from fastcycle.train.heldout import paired_held_out
from fastcycle.train.samples import save_paired_grid


class Pix2Pix(GANModel):
    generators = ("G",)
    discriminators = ("D",)
    reference_files: ClassVar[dict[str, str]] = {"G": "G", "D": "D"}

    @property
    def loss_names(self) -> tuple[str, ...]:
        return ("G_GAN", "G_L1", "D_real", "D_fake", *self._gp_names())

    def build_nets(self, m: ModelConfig, kernels: str) -> dict[str, nn.Module]:
        init = dict(init_type=m.init_type, init_gain=m.init_gain)
        G = build_generator(
            m.netG,
            ngf=m.ngf,
            norm=m.norm,
            dropout=m.dropout,
            input_nc=m.input_nc,
            output_nc=m.output_nc,
            kernels=kernels,
            **init,
        )
        # Conditional: D sees the input and the (real or generated) output stacked, input_nc + output_nc.
        nc = m.input_nc + m.output_nc
        D = build_discriminator(m.netD, ndf=m.ndf, n_layers=m.n_layers_D, norm=m.norm, input_nc=nc, **init)
        return {"G": G, "D": D}

    @classmethod
    def open_data(cls, cfg: TrainConfig, root: Path, env: RunEnv, state: dict | None) -> DataSource:
        """The pairs under `root` (train/ or trainA/ + trainB/), read by the torch loader; with
        --eval-every, the held-out pairs too."""
        d = cfg.data
        files, held = find_pairs(root, d.max_dataset_size), None
        if parse_eval_every(cfg.run.eval_every)[0]:  # without test images: a slice of the pairs
            files, held = paired_held_out(cfg, root, files)
        spec = LoaderSpec(files.A, None, **spec_fields(cfg, env))
        loader = AlignedLoader(files, spec, d.direction, d.num_workers)
        ncs, sides = loader.channel_targets()
        log_scans(loader.scans, ncs, loader.unmatched, sides)
        return DataSource(root, loader, loader.note, held_out=held)

    def train_step(
        self, real_A: torch.Tensor, real_B: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One iteration on paired (N, input_nc, H, W) and (N, output_nc, H, W) batches in [-1, 1]: real_A
        is the input, real_B its target. Returns the detached losses and the skip flag, on the device (no
        host sync)."""
        lo = self.cfg.loss
        with self.autocast():
            (fake_B,) = self._calls("G", real_A)

        # Discriminator: real pairs vs generated pairs (the fakes made finite: a skipped step's may not be).
        # (N, input_nc + output_nc, H, W), float32 as under autocast (cat promotes)
        real_AB = torch.cat([real_A, real_B], 1)
        fake_AB = torch.cat([real_A, fake_B.detach().nan_to_num(0.0, 1.0, -1.0)], 1)
        parts, bad_D = self._discriminator_step({"D": (real_AB, fake_AB)})
        losses = parts["D"]

        # Generator: fool the updated discriminator and stay close to the target in L1.
        self._freeze_discriminators()
        with self.autocast():
            (judged,) = self._calls("D", torch.cat([real_A, fake_B], 1))
            losses["G_GAN"] = gan_loss(judged, True, lo.gan_mode)
            losses["G_L1"] = l1(fake_B, real_B) * lo.lambda_L1
            loss_G = losses["G_GAN"] + losses["G_L1"]
        bad_G = self._generator_step(loss_G)
        return self._end_step(losses, bad_G | bad_D)

    def save_samples(self, inputs: tuple, path) -> np.ndarray:
        return save_paired_grid(self, *inputs, path)
