"""DCGAN (Radford et al. 2016): noise z ~ N(0, I) -> 64x64 image, against a convolutional discriminator,
one image folder as data. The discriminator steps first on real and generated images, then the
generator against the updated discriminator, as in the paper and pytorch/examples."""

from __future__ import annotations

import numpy as np
import torch

from fastcycle.config import TrainConfig
from fastcycle.losses import gan_loss
from fastcycle.models import build_discriminator, build_generator
from fastcycle.runtime import Precision
from fastcycle.train.distributed import DistInfo
from fastcycle.train.gan import GANModel
from fastcycle.train.samples import save_noise_grid

N_SAMPLES = 64  # the fixed noise batch of the sample grids (8 x 8)


class DCGAN(GANModel):
    generators = ("G",)
    discriminators = ("D",)

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        precision: Precision,
        kernels: str = "torch",
        dist_info: DistInfo | None = None,
    ):
        m = cfg.model
        torch.manual_seed(cfg.runtime.seed)
        init = dict(init_type=m.init_type, init_gain=m.init_gain)
        nets = {
            "G": build_generator("dcgan", ngf=m.ngf, norm=m.norm, nz=m.nz, **init),
            "D": build_discriminator("dcgan", ndf=m.ndf, norm=m.norm, **init),
        }
        super().__init__(cfg, device, precision, nets, dist_info)
        self.G, self.D = self.nets["G"], self.nets["D"]
        self.nz = m.nz
        wgan = ("gp",) if cfg.loss.gan_mode == "wgangp" else ()
        self.loss_names = ("G", "D_real", "D_fake", *wgan)
        # Noise drawn on the device from its own generator: no host-to-device copy per step, and a
        # stream that a checkpoint can restore (the loop saves the device RNG state).
        self.fixed_z = torch.randn(
            N_SAMPLES, m.nz, 1, 1, generator=torch.Generator().manual_seed(cfg.runtime.seed)
        ).to(device)

    def step(self, batch) -> dict[str, torch.Tensor]:
        return self.train_step(batch.A)

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """One iteration on (N, 3, 64, 64) real images in [-1, 1]; detached losses (no host sync)."""
        lo = self.cfg.loss
        losses: dict[str, torch.Tensor] = {}
        z = torch.randn(real.shape[0], self.nz, 1, 1, device=self.device)
        with self.autocast():
            (fake,) = self._calls("G", z)

        self.D.requires_grad_(True)
        with self.autocast():
            pred_real, pred_fake = self._calls("D", real, fake.detach().nan_to_num(0.0, 1.0, -1.0))
            losses["D_real"] = gan_loss(pred_real, True, lo.gan_mode, self.real_range)
            losses["D_fake"] = gan_loss(pred_fake, False, lo.gan_mode)
            loss_D = losses["D_real"] + losses["D_fake"]
            if lo.gan_mode == "wgangp":
                losses["gp"] = self._penalty("D", real, fake)
                loss_D = loss_D + losses["gp"]
        bad_D = self._backward_step(self.opt_D, loss_D)

        self.D.requires_grad_(False)
        with self.autocast():
            losses["G"] = gan_loss(self.D(fake), True, lo.gan_mode)
        bad_G = self._backward_step(self.opt_G, losses["G"])
        self._after_G_step(losses["G"])
        self.scaler.update()
        self.last_skipped = bad_G | bad_D
        return {k: v.detach() for k, v in losses.items()}

    def sample_inputs(self, batch) -> tuple:
        return (self.fixed_z,)

    def save_samples(self, inputs: tuple, path) -> np.ndarray:
        return save_noise_grid(self, inputs[0], path)
