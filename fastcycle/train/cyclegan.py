"""CycleGAN: the four networks and one training step, with the options users built on it: WGAN-GP and
the semi-supervised class heads (`--aux-classifier`).

Names follow the paper: G_AB maps A -> B (the reference's netG_A), G_BA maps B -> A (netG_B),
D_A judges domain A images (the reference's netD_B), D_B judges domain B images (netD_A).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from fastcycle.choices import CYCLE_GENERATORS
from fastcycle.config import ModelConfig, TrainConfig, parse_eval_every
from fastcycle.data.contract import Batch, LoaderSpec
from fastcycle.data.loader import build_loader
from fastcycle.data.scan import scan_domain
from fastcycle.losses import class_loss, gan_loss, l1
from fastcycle.models import build_discriminator, build_generator, eval_mode
from fastcycle.pool import ImagePool
from fastcycle.train.data import DataSource, class_labels, log_scans, spec_fields
from fastcycle.train.env import ModelEnv, RunEnv
from fastcycle.train.gan import GANModel
from fastcycle.train.heldout import cycle_held_out
from fastcycle.train.runlog import log
from fastcycle.train.samples import save_cycle_grid

LOSS_NAMES = ("D_A", "G_BA", "cycle_A", "idt_A", "D_B", "G_AB", "cycle_B", "idt_B")


class CycleGAN(GANModel):
    generators = ("G_AB", "G_BA")
    discriminators = ("D_A", "D_B")
    reference_files: ClassVar[dict[str, str]] = {"G_AB": "G_A", "G_BA": "G_B", "D_A": "D_B", "D_B": "D_A"}

    def __init__(
        self,
        cfg: TrainConfig,
        env: ModelEnv,
        *,
        labels: tuple[torch.Tensor, torch.Tensor] | None = None,
        n_classes: int = 0,
    ):
        """labels, n_classes: with --aux-classifier, (n_A,) and (n_B,) int64 class of each scanned file
        (-1: none) and how many classes, from the DataSource (CycleGAN.open_data)."""
        self.aux, self.n_classes = cfg.model.aux_classifier, n_classes
        super().__init__(cfg, env)
        lo = cfg.loss
        if self.aux:
            self.labels_A, self.labels_B = (t.to(env.device) for t in labels)
        rank_seed = cfg.runtime.seed * 2 + 7919 * self.dist.rank  # a pool per rank, each with its own draws
        self.pool_A = ImagePool(lo.pool_size, rank_seed + 1)  # past fake_A, for D_A
        self.pool_B = ImagePool(lo.pool_size, rank_seed + 2)  # past fake_B, for D_B

    def build_nets(self, m: ModelConfig, kernels: str) -> dict[str, nn.Module]:
        g = dict(ngf=m.ngf, norm=m.norm, dropout=m.dropout, init_type=m.init_type, init_gain=m.init_gain)
        d = dict(ndf=m.ndf, n_layers=m.n_layers_D, norm=m.norm, init_type=m.init_type, init_gain=m.init_gain)
        if self.aux:
            d["n_classes"] = self.n_classes
        a, b = m.input_nc, m.output_nc  # channels of domain A's images and of domain B's
        return {
            "G_AB": build_generator(m.netG, **g, input_nc=a, output_nc=b, kernels=kernels),
            "G_BA": build_generator(m.netG, **g, input_nc=b, output_nc=a, kernels=kernels),
            "D_A": build_discriminator(m.netD, **d, input_nc=a),
            "D_B": build_discriminator(m.netD, **d, input_nc=b),
        }

    @property
    def loss_names(self) -> tuple[str, ...]:
        gp = ("gp_A", "gp_B") if self.cfg.loss.gan_mode == "wgangp" else ()
        return (*LOSS_NAMES, *gp, *(("cls_A", "cls_B", "G_cls") if self.aux else ()))

    @classmethod
    def open_data(cls, cfg: TrainConfig, root: Path, env: RunEnv, state: dict | None) -> DataSource:
        """trainA/ and trainB/ under `root`, vetted, read by the --loader choice (which says why); with
        --eval-every, the held-out images too."""
        scans = [scan_domain(root, name, cfg.data.max_dataset_size) for name in ("trainA", "trainB")]
        log_scans(scans, [cfg.model.input_nc, cfg.model.output_nc])
        held = None
        if parse_eval_every(cfg.run.eval_every)[0]:  # without testA/testB: a slice of trainA and trainB
            scans, held = cycle_held_out(cfg, root, scans)
        labels, n_classes = class_labels(cfg, scans) if cfg.model.aux_classifier else (None, 0)
        spec = LoaderSpec(*scans, **spec_fields(cfg, env))
        loader, note = build_loader(cfg.data, spec, env.run_dir, state.get("loader") if state else None, log)
        return DataSource(root, loader, note, labels, n_classes, held)

    def generator_name(self, direction: str) -> str:
        return CYCLE_GENERATORS[direction]

    def _labels(self, table: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        # The index batch is pinned (torch loader) or already on the device (gpu-cache): no sync.
        return table[index.to(self.device, non_blocking=True)]

    def step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.train_step(batch.A, batch.B, batch.index_A, batch.index_B)

    def train_step(
        self,
        real_A: torch.Tensor,
        real_B: torch.Tensor,
        index_A: torch.Tensor | None = None,
        index_B: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One iteration on (N, input_nc, H, W) and (N, output_nc, H, W) batches in [-1, 1]: the detached
        losses and a 0-dim bool, true when the non-finite guard skipped the step, both on the device (no
        sync). index_A/index_B: the
        batch's file indices, for the class labels of --aux-classifier."""
        lo = self.cfg.loss
        lambda_idt = lo.lambda_identity
        losses: dict[str, torch.Tensor] = {}
        if self.aux:
            y_A, y_B = self._labels(self.labels_A, index_A), self._labels(self.labels_B, index_B)

        # Generators: GAN + cycle + identity (+ class of the fakes), with the discriminators frozen.
        self._freeze_discriminators()
        with self.autocast():
            if lambda_idt > 0:
                fake_B, idt_A = self._calls("G_AB", real_A, real_B)
                fake_A, idt_B = self._calls("G_BA", real_B, real_A)
            else:
                (fake_B,) = self._calls("G_AB", real_A)
                (fake_A,) = self._calls("G_BA", real_B)
            (rec_A,), (rec_B,) = self._calls("G_BA", fake_B), self._calls("G_AB", fake_A)
            (judged_B,), (judged_A,) = self._calls("D_B", fake_B), self._calls("D_A", fake_A)
            if self.aux:  # a fake keeps its source's class: D_B's head should read y_A in fake_B
                (judged_B, cls_fake_B), (judged_A, cls_fake_A) = judged_B, judged_A
                losses["G_cls"] = (class_loss(cls_fake_B, y_A) + class_loss(cls_fake_A, y_B)) * lo.lambda_cls
            losses["G_AB"] = gan_loss(judged_B, True, lo.gan_mode)
            losses["G_BA"] = gan_loss(judged_A, True, lo.gan_mode)
            losses["cycle_A"] = l1(rec_A, real_A) * lo.lambda_A
            losses["cycle_B"] = l1(rec_B, real_B) * lo.lambda_B
            if lambda_idt > 0:
                losses["idt_A"] = l1(idt_A, real_B) * lo.lambda_B * lambda_idt
                losses["idt_B"] = l1(idt_B, real_A) * lo.lambda_A * lambda_idt
            loss_G = sum(losses.values())
        bad_G = self._generator_step(loss_G)

        # Discriminators: real vs a pooled fake. A step the guard skips may have made non-finite fakes;
        # they must not sit in the pools for later steps to draw (nan_to_num checks on the device, no
        # sync; finite values pass unchanged).
        fake_B = self.pool_B.query(fake_B.nan_to_num(0.0, 1.0, -1.0))
        fake_A = self.pool_A.query(fake_A.nan_to_num(0.0, 1.0, -1.0))
        judged = {"D_B": (real_B, fake_B), "D_A": (real_A, fake_A)}
        parts, bad_D = self._discriminator_step(judged, labels={"D_B": y_B, "D_A": y_A} if self.aux else None)
        for side in "AB":  # D_A: its halved real and fake losses together, as the reference logs them
            part = parts[f"D_{side}"]
            losses[f"D_{side}"] = part.pop("D_real") + part.pop("D_fake")
            losses |= {f"{kind}_{side}": loss for kind, loss in part.items()}  # gp_A, cls_A
        return self._end_step(losses, bad_G | bad_D)

    @torch.no_grad()
    def classify(self, domain: str, images: torch.Tensor) -> torch.Tensor:
        """--aux-classifier: class logits of `images` by the domain's discriminator head, in eval mode."""
        net = self.nets["D_A" if domain == "A" else "D_B"]
        with eval_mode(net):
            return net(images)[1].float()

    def save_samples(self, inputs: tuple, path) -> np.ndarray:
        return save_cycle_grid(self, *inputs, path)

    def extra_state(self) -> dict:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)
