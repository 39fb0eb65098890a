"""CycleGAN: the four networks, their optimizers, and one training step.

Names follow the paper: G_AB maps A -> B (the reference's netG_A), G_BA maps B -> A (netG_B),
D_A judges domain A images (the reference's netD_B), D_B judges domain B images (netD_A).
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext

import torch
from torch import nn

from fastcycle.config import TrainConfig
from fastcycle.losses import gan_loss, l1
from fastcycle.models import build_discriminator, build_generator
from fastcycle.pool import ImagePool
from fastcycle.train.distributed import DistInfo, any_rank, sync_batchnorm, wrap
from fastcycle.train.ema import EMA
from fastcycle.train.runtime import Precision
from fastcycle.train.schedule import linear_scheduler

LOSS_NAMES = ("D_A", "G_BA", "cycle_A", "idt_A", "D_B", "G_AB", "cycle_B", "idt_B")


class CycleGAN:
    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        precision: Precision,
        kernels: str = "torch",
        dist_info: DistInfo | None = None,
    ):
        """kernels: the resolved --kernels choice (torch or triton) for the generators' layers;
        dist_info: this process's rank under torchrun (fastcycle.train.distributed)."""
        self.dist = dist_info or DistInfo()
        self.cfg, self.device, self.precision = cfg, device, precision
        m, o = cfg.model, cfg.optim
        torch.manual_seed(cfg.runtime.seed)
        g = dict(ngf=m.ngf, norm=m.norm, dropout=m.dropout, init_type=m.init_type, init_gain=m.init_gain)
        d = dict(ndf=m.ndf, n_layers=m.n_layers_D, norm=m.norm, init_type=m.init_type, init_gain=m.init_gain)
        memory_format = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
        self.nets: dict[str, nn.Module] = {
            "G_AB": build_generator(m.netG, **g, kernels=kernels),
            "G_BA": build_generator(m.netG, **g, kernels=kernels),
            "D_A": build_discriminator(m.netD, **d),
            "D_B": build_discriminator(m.netD, **d),
        }
        if m.norm == "batch":
            self.nets = {k: sync_batchnorm(v, self.dist, device) for k, v in self.nets.items()}
        for net in self.nets.values():
            net.to(device, memory_format=memory_format).train()
        self.G_AB, self.G_BA, self.D_A, self.D_B = self.nets.values()
        self.ema = {k: EMA(self.nets[k], o.ema_decay) for k in ("G_AB", "G_BA")} if o.ema_decay else {}

        # Fused Adam updates all parameters in a few kernels and reads an inf flag on the device (the
        # GradScaler's, or the non-finite guard's below), so skipping a bad step needs no host sync.
        adam = dict(lr=o.lr, betas=(o.beta1, 0.999), fused=True)
        self.opt_G = torch.optim.Adam(itertools.chain(self.G_AB.parameters(), self.G_BA.parameters()), **adam)
        self.opt_D = torch.optim.Adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), **adam)
        self.sched_G = linear_scheduler(self.opt_G, o.n_epochs, o.n_epochs_decay)
        self.sched_D = linear_scheduler(self.opt_D, o.n_epochs, o.n_epochs_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
        seed = cfg.runtime.seed
        rank_seed = seed * 2 + 7919 * self.dist.rank  # a pool per rank, each with its own draws
        self.pool_A = ImagePool(cfg.loss.pool_size, rank_seed + 1)  # past fake_A, for D_A
        self.pool_B = ImagePool(cfg.loss.pool_size, rank_seed + 2)  # past fake_B, for D_B
        # Instance norm (and no norm) treat each image alone, so calls of a network on two batches
        # can be one call on their concatenation: half the launches and twice the batch, which fills
        # the GPU at batch 1. Batch norm would mix the statistics, so it keeps separate calls.
        self.concat_calls = m.norm != "batch"
        if cfg.runtime.compile:
            for net in self.nets.values():
                # In place, so state-dict keys stay free of `_orig_mod.`; static shapes, since the step
                # uses just two batch sizes per network.
                net.compile(dynamic=False)
        # Under torchrun: DDP wrappers, called first in each backward pass (fastcycle.train.distributed).
        self.wrapped = wrap(self.nets, self.dist, device)

    def autocast(self):
        if not self.precision.enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.dtype)

    def _calls(self, name: str, *xs: torch.Tensor) -> list[torch.Tensor]:
        """nets[name](x) for each x, as one batched call where the norm allows. The first call goes
        through the DDP wrapper when distributed; the rest use the module (see distributed.py)."""
        if self.concat_calls and len(xs) > 1:
            return list(self.wrapped[name](torch.cat(xs)).chunk(len(xs)))
        return [self.wrapped[name](xs[0]), *(self.nets[name](x) for x in xs[1:])]

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """One iteration on (N, 3, H, W) batches in [-1, 1]; returns detached loss tensors (no sync)."""
        lo = self.cfg.loss
        lambda_idt = lo.lambda_identity
        D_nets = (self.D_A, self.D_B)
        losses: dict[str, torch.Tensor] = {}

        # Generators: GAN + cycle + identity, with the discriminators frozen.
        for net in D_nets:
            net.requires_grad_(False)
        with self.autocast():
            if lambda_idt > 0:
                fake_B, idt_A = self._calls("G_AB", real_A, real_B)
                fake_A, idt_B = self._calls("G_BA", real_B, real_A)
            else:
                (fake_B,) = self._calls("G_AB", real_A)
                (fake_A,) = self._calls("G_BA", real_B)
            rec_A = self.G_BA(fake_B)
            rec_B = self.G_AB(fake_A)
            losses["G_AB"] = gan_loss(self.D_B(fake_B), True, lo.gan_mode)
            losses["G_BA"] = gan_loss(self.D_A(fake_A), True, lo.gan_mode)
            losses["cycle_A"] = l1(rec_A, real_A) * lo.lambda_A
            losses["cycle_B"] = l1(rec_B, real_B) * lo.lambda_B
            if lambda_idt > 0:
                losses["idt_A"] = l1(idt_A, real_B) * lo.lambda_B * lambda_idt
                losses["idt_B"] = l1(idt_B, real_A) * lo.lambda_A * lambda_idt
            loss_G = sum(losses.values())
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(loss_G).backward()
        bad_G = self._guarded_step(self.opt_G, loss_G)
        for ema_name, ema in self.ema.items():
            ema.update(self.nets[ema_name])

        # Discriminators: real vs a pooled fake, each loss halved to slow D relative to G.
        for net in D_nets:
            net.requires_grad_(True)
        # A step the guard skips may have made non-finite fakes; they must not sit in the pools for
        # later steps to draw (nan_to_num checks on the device, no sync; finite values pass unchanged).
        fake_B = self.pool_B.query(fake_B.nan_to_num(0.0, 1.0, -1.0))
        fake_A = self.pool_A.query(fake_A.nan_to_num(0.0, 1.0, -1.0))
        with self.autocast():
            pred_real_B, pred_fake_B = self._calls("D_B", real_B, fake_B)
            pred_real_A, pred_fake_A = self._calls("D_A", real_A, fake_A)
            losses["D_B"] = (
                gan_loss(pred_real_B, True, lo.gan_mode) + gan_loss(pred_fake_B, False, lo.gan_mode)
            ) * 0.5
            losses["D_A"] = (
                gan_loss(pred_real_A, True, lo.gan_mode) + gan_loss(pred_fake_A, False, lo.gan_mode)
            ) * 0.5
        self.opt_D.zero_grad(set_to_none=True)
        loss_D = losses["D_A"] + losses["D_B"]
        self.scaler.scale(loss_D).backward()
        bad_D = self._guarded_step(self.opt_D, loss_D)
        self.scaler.update()
        self.last_skipped = bad_G | bad_D  # (0-dim bool on the device) read by the loop at log lines
        return {k: v.detach() for k, v in losses.items()}

    def _guarded_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
        """opt.step() unless the loss or a gradient is non-finite; returns that flag, on the device.

        fp16 runs leave this to the GradScaler (it skips overflowing steps and lowers its scale). bf16
        and fp32 have no scaler: one multi-tensor norm over the gradients decides, and fused Adam skips
        the update (and its step count) on the device, without a host sync.
        """
        if self.scaler.is_enabled():
            self.scaler.step(opt)
            return torch.zeros((), dtype=torch.bool, device=self.device)  # the scaler counts these
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        finite = torch.isfinite(loss.detach()) & torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        bad = any_rank(~finite, self.dist, self.device)  # every rank skips, or none: replicas stay equal
        opt.found_inf = bad.float()  # read by fused Adam's step
        opt.step()
        return bad

    def end_epoch(self) -> None:
        self.sched_G.step()
        self.sched_D.step()

    def generator(self, direction: str) -> nn.Module:
        """The generator for translation: the EMA weights when kept, else the trained ones."""
        name = "G_AB" if direction == "AtoB" else "G_BA"
        return self.ema[name].net if name in self.ema else self.nets[name]

    def state_dict(self) -> dict:
        state = {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "ema": {k: e.net.state_dict() for k, e in self.ema.items()},
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "pool_A": self.pool_A.state_dict(),
            "pool_B": self.pool_B.state_dict(),
        }
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(state["nets"][k])
        for k, e in self.ema.items():
            e.net.load_state_dict(state["ema"][k])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        self.scaler.load_state_dict(state["scaler"])
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)
