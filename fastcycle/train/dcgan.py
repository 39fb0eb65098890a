"""DCGAN (Radford et al. 2016): noise z ~ N(0, I) -> 64x64 image, against a convolutional discriminator,
one image folder as data. The discriminator steps first on real and generated images, then the
generator against the updated discriminator, as in the paper and pytorch/examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastcycle.config import ModelConfig, TrainConfig
from fastcycle.data.contract import Batch
from fastcycle.data.single import open_single
from fastcycle.losses import gan_loss
from fastcycle.models import build_discriminator, build_generator
from fastcycle.train.data import DataSource, log_scans, spec_fields
from fastcycle.train.env import RunEnv
from fastcycle.train.gan import GANModel
from fastcycle.train.samples import save_noise_grid

N_SAMPLES = 64  # the fixed noise batch of the sample grids (8 x 8)


class DCGAN(GANModel):
    generators = ("G",)
    discriminators = ("D",)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return ("G", "D_real", "D_fake", *self._gp_names())

    def build_nets(self, m: ModelConfig, kernels: str) -> dict[str, nn.Module]:
        init = dict(init_type=m.init_type, init_gain=m.init_gain)
        return {
            "G": build_generator("dcgan", ngf=m.ngf, norm=m.norm, nz=m.nz, output_nc=m.output_nc, **init),
            "D": build_discriminator("dcgan", ndf=m.ndf, norm=m.norm, input_nc=m.output_nc, **init),
        }

    @classmethod
    def open_data(cls, cfg: TrainConfig, root: Path, env: RunEnv, state: dict | None) -> DataSource:
        """The images under `root` (subfolders included), read by the torch loader."""
        fields = spec_fields(cfg, env) | {"nc_A": cfg.model.output_nc}  # the images G makes: output_nc
        loader = open_single(root, cfg.data.num_workers, cfg.data.max_dataset_size, **fields)
        log_scans(loader.scans, [cfg.model.output_nc])
        return DataSource(root, loader, loader.note)

    def step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.train_step(batch.A)

    def train_step(self, real: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One iteration on (N, output_nc, 64, 64) real images in [-1, 1]; the detached losses and the skip
        flag, on the device (no host sync). The noise is drawn on the device: no host-to-device copy
        per step, and a stream the checkpoint restores (the loop saves the device RNG state)."""
        z = torch.randn(real.shape[0], self.cfg.model.nz, 1, 1, device=self.device)
        with self.autocast():
            (fake,) = self._calls("G", z)

        # D's losses are not halved here: pytorch/examples sums them (the fakes made finite first).
        parts, bad_D = self._discriminator_step({"D": (real, fake.detach().nan_to_num(0.0, 1.0, -1.0))}, 1.0)
        losses = parts["D"]

        self._freeze_discriminators()
        with self.autocast():
            (judged,) = self._calls("D", fake)
            losses["G"] = gan_loss(judged, True, self.cfg.loss.gan_mode)
        bad_G = self._generator_step(losses["G"])
        return self._end_step(losses, bad_G | bad_D)

    def sample_inputs(self, batch: Batch) -> tuple:
        """One fixed noise batch, from its own seeded generator, so the grids show progress on the same z."""
        g = torch.Generator().manual_seed(self.cfg.runtime.seed)
        return (torch.randn(N_SAMPLES, self.cfg.model.nz, 1, 1, generator=g).to(self.device),)

    def save_samples(self, inputs: tuple, path) -> np.ndarray:
        return save_noise_grid(self, inputs[0], path)
