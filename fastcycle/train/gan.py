"""What every model family (CycleGAN, pix2pix, DCGAN, the Distiller) shares: devices and memory format,
generator and discriminator optimizers with their LR policy, the non-finite step guard, EMA, the
discriminator step, the one way a step calls a network (DDP wrapper or module), and the checkpoint
state. A family builds its networks (`build_nets`), names its losses (`loss_names`), implements
`train_step` (returning its losses and its skip flag) and `save_samples`, and opens its own data
(`open_data`).
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from fastcycle.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_weights, safe_load
from fastcycle.config import ModelConfig, TrainConfig, parse_label_smoothing
from fastcycle.data.contract import Batch
from fastcycle.errors import UserError
from fastcycle.losses import class_loss, gan_loss, gradient_penalty
from fastcycle.train.data import DataSource
from fastcycle.train.distributed import any_rank, sync_batchnorm, wrap
from fastcycle.train.ema import EMA
from fastcycle.train.env import ModelEnv, RunEnv
from fastcycle.train.schedule import build_scheduler, step_scheduler


class GANModel:
    generators: tuple[str, ...] = ()  # names in `nets` trained by opt_G (and kept as EMA)
    discriminators: tuple[str, ...] = ()  # trained by opt_D
    # --init-weights from a reference checkpoints folder: our name -> the reference's file stem.
    reference_files: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: TrainConfig, env: ModelEnv):
        """env: the device, the precision, the resolved --kernels choice (torch or triton) for the
        generators' layers, and this process's rank under torchrun (fastcycle.train.distributed)."""
        self.cfg, self.env = cfg, env
        self.device, self.precision, self.dist = env.device, env.precision, env.dist
        device, m, o = env.device, cfg.model, cfg.optim
        torch.manual_seed(cfg.runtime.seed)  # the networks' initial weights
        self.nets = self.build_nets(m, env.kernels)
        if m.norm == "batch":
            self.nets = {k: sync_batchnorm(v, self.dist, device) for k, v in self.nets.items()}
        memory_format = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
        for net in self.nets.values():
            net.to(device, memory_format=memory_format).train()
        if cfg.run.init_weights and not cfg.run.resume:  # a resumed run has its own weights
            self.load_initial_weights(cfg.run.init_weights)
        self.ema = {k: EMA(self.nets[k], o.ema_decay) for k in self.generators} if o.ema_decay else {}

        # Fused Adam updates all parameters in a few kernels and reads an inf flag on the device (the
        # GradScaler's, or the non-finite guard's), so skipping a bad step needs no host sync.
        adam = dict(lr=o.lr, betas=(o.beta1, 0.999), fused=True)
        self.opt_G = torch.optim.Adam(self._params(self.generators), **adam)
        # A family may train no discriminator (distillation without its adversarial loss): no opt_D.
        self.opt_D = (
            torch.optim.Adam(self._params(self.discriminators), **adam) if self.discriminators else None
        )
        self.sched_G = build_scheduler(self.opt_G, o)
        self.sched_D = build_scheduler(self.opt_D, o) if self.opt_D is not None else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=env.precision.needs_scaler)
        self.real_range = parse_label_smoothing(cfg.loss.label_smoothing)
        # plateau's metric: the epoch's generator loss, summed on the device (read once per epoch).
        self._epoch_loss = torch.zeros((), device=device)
        self._epoch_steps = 0
        # Instance norm (and no norm) treat each image alone, so calls of a network on two batches
        # can be one call on their concatenation: half the launches and twice the batch, which fills
        # the GPU at batch 1. Batch norm would mix the statistics, so it keeps separate calls.
        self.concat_calls = m.norm != "batch"
        if cfg.runtime.compile:
            for net in self.nets.values():
                # In place, so state-dict keys stay free of `_orig_mod.`; static shapes, since a step
                # uses just two batch sizes per network.
                net.compile(dynamic=False, fullgraph=True)
        # Under torchrun: DDP wrappers, which `_net` hands out (fastcycle.train.distributed).
        self._wrapped = wrap(self.nets, self.dist, device)
        self._called: set[str] = set()  # networks called since the last backward pass

    def build_nets(self, m: ModelConfig, kernels: str) -> dict[str, nn.Module]:
        """The family's freshly initialised networks by name (generators and discriminators)."""
        raise NotImplementedError

    @property
    def loss_names(self) -> tuple[str, ...]:
        """The losses `train_step` returns under this config's options, in the order of the progress
        line and metrics.jsonl (a name the step did not compute is left out there)."""
        raise NotImplementedError

    @classmethod
    def open_data(cls, cfg: TrainConfig, root: Path, env: RunEnv, state: dict | None) -> DataSource:
        """Scan the family's data under `root`, log what the scan found, and build its loader (`state`: a
        resumed checkpoint, whose loader position the loader may continue from)."""
        raise NotImplementedError

    def _params(self, names: tuple[str, ...]):
        return list(itertools.chain.from_iterable(self.nets[n].parameters() for n in names))

    def autocast(self):
        if not self.precision.enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.dtype)

    def _calls(self, name: str, *xs: torch.Tensor) -> list:
        """nets[name](x) for each x, as one batched call where the norm allows: the one way a step
        calls a network. A network with two outputs (a discriminator with a class head) gives a tuple
        per x."""
        if self.concat_calls and len(xs) > 1:
            out = self._net(name)(torch.cat(xs))
            if isinstance(out, tuple):
                return list(zip(*(t.chunk(len(xs)) for t in out), strict=True))
            return list(out.chunk(len(xs)))
        return [self._net(name)(x) for x in xs]

    def _net(self, name: str) -> nn.Module:
        """What runs network `name` now: under torchrun its DDP wrapper for its first call in a backward
        pass, the module for its further calls there (their gradients join the same leaves, which
        DDP reduces once) and while it is frozen (no gradient to reduce); see distributed.py."""
        net = self.nets[name]
        if name in self._called or not any(p.requires_grad for p in net.parameters()):
            return net
        self._called.add(name)
        return self._wrapped[name]

    def _penalty(self, name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """lambda_gp x WGAN-GP penalty of discriminator `name`. `forward` runs the module eagerly even
        when it is compiled (compiled graphs have no double backward) and outside the DDP wrapper (its
        weight gradients are reduced with the main D loss's)."""
        net = self.nets[name]

        def critic(x: torch.Tensor) -> torch.Tensor:
            out = net.forward(x)
            return out[0] if isinstance(out, tuple) else out

        return gradient_penalty(critic, real, fake) * self.cfg.loss.lambda_gp

    def _freeze_discriminators(self) -> None:
        """Before the generators' loss, which needs D's input gradients but not its weights'."""
        for name in self.discriminators:
            self.nets[name].requires_grad_(False)

    def _discriminator_step(
        self,
        judged: dict[str, tuple[torch.Tensor, torch.Tensor]],
        scale: float = 0.5,
        labels: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, dict[str, torch.Tensor]], torch.Tensor]:
        """Each discriminator of `judged` (name -> its real and its fake batch) learns to tell them apart;
        then backward and the guarded step of opt_D. Returns each one's losses by kind and the skip flag.

        The kinds: the GAN loss on the reals ("D_real") and on the fakes ("D_fake"), each times `scale`
        (the reference halves them to slow D relative to G; DCGAN does not), with wgangp lambda_gp x the
        WGAN-GP penalty ("gp"), with a class head lambda_cls x the class loss of the reals ("cls",
        against `labels[name]`, their classes; a fake teaches the head nothing).
        """
        lo = self.cfg.loss
        for name in self.discriminators:
            self.nets[name].requires_grad_(True)
        parts: dict[str, dict[str, torch.Tensor]] = {}
        with self.autocast():
            for name, (real, fake) in judged.items():
                pred_real, pred_fake = self._calls(name, real, fake)
                part = parts[name] = {}
                if isinstance(pred_real, tuple):  # (logits, class logits): a discriminator with a class head
                    (pred_real, cls_real), (pred_fake, _) = pred_real, pred_fake
                    part["cls"] = class_loss(cls_real, labels[name]) * lo.lambda_cls
                part["D_real"] = gan_loss(pred_real, True, lo.gan_mode, self.real_range) * scale
                part["D_fake"] = gan_loss(pred_fake, False, lo.gan_mode) * scale
                if lo.gan_mode == "wgangp":
                    part["gp"] = self._penalty(name, real, fake)
            loss_D = sum(loss for part in parts.values() for loss in part.values())
        return parts, self._backward_step(self.opt_D, loss_D)

    def _generator_step(self, loss_G: torch.Tensor) -> torch.Tensor:
        """Backward and the guarded step of opt_G, then the EMA update; returns the skip flag."""
        bad = self._backward_step(self.opt_G, loss_G)
        for name, ema in self.ema.items():
            ema.update(self.nets[name])
        if self.cfg.optim.lr_policy == "plateau":
            self._epoch_loss += loss_G.detach().float().nan_to_num(0.0, 0.0, 0.0)
            self._epoch_steps += 1
        return bad

    def _end_step(
        self, losses: dict[str, torch.Tensor], skipped: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """What `train_step` returns, after the GradScaler's one update per iteration (fp16)."""
        self.scaler.update()
        return {k: v.detach() for k, v in losses.items()}, skipped

    def _backward_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self._called.clear()  # the next backward pass starts: first calls go through DDP again
        return self._guarded_step(opt, loss)

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
        """The per-epoch LR policy; plateau reads the epoch's mean generator loss (one sync per epoch)."""
        metric = None
        if self.cfg.optim.lr_policy == "plateau":
            total = self._epoch_loss / max(self._epoch_steps, 1)
            if self.dist.enabled:  # every rank must take the same decision
                torch.distributed.all_reduce(total)
                total /= self.dist.world_size
            metric = total.item()
            self._epoch_loss.zero_()
            self._epoch_steps = 0
        step_scheduler(self.sched_G, metric)
        if self.sched_D is not None:
            step_scheduler(self.sched_D, metric)

    @property
    def lr(self) -> float:
        return self.opt_G.param_groups[0]["lr"]

    def generator(self, direction: str = "AtoB") -> nn.Module:
        """The generator for inference: the EMA weights when kept, else the trained ones."""
        name = self.generator_name(direction)
        return self.ema[name].net if name in self.ema else self.nets[name]

    def generator_name(self, direction: str) -> str:
        return self.generators[0]

    def step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One training iteration on a loader Batch: (detached losses, 0-dim bool `skipped`: the non-finite
        guard kept the weights), both on the device; no host sync."""
        return self.train_step(batch.A, batch.B)

    def _gp_names(self) -> tuple[str, ...]:
        return ("gp",) if self.cfg.loss.gan_mode == "wgangp" else ()

    def sample_inputs(self, batch: Batch) -> tuple:
        """What save_samples shows throughout the run, taken from the first batch."""
        return (batch.A[:4].clone(), batch.B[:4].clone())

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "ema": {k: e.net.state_dict() for k, e in self.ema.items()},
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict() if self.opt_D is not None else {},
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict() if self.sched_D is not None else {},
            "scaler": self.scaler.state_dict(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(state["nets"][k])
        for k, e in self.ema.items():
            e.net.load_state_dict(state["ema"][k])
        self.opt_G.load_state_dict(state["opt_G"])
        self.sched_G.load_state_dict(state["sched_G"])
        if self.opt_D is not None:
            self.opt_D.load_state_dict(state["opt_D"])
            self.sched_D.load_state_dict(state["sched_D"])
        self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state)

    def load_initial_weights(self, source: str) -> list[str]:
        """--init-weights: network weights (not optimizer state) from a fastcycle run or checkpoint, or
        a reference checkpoints folder (latest_net_G_A.pth ...). Returns the names loaded."""
        path = Path(source)
        loaded = []
        if path.is_dir() and not (path / CHECKPOINT_NAME).exists():
            for name, stem in self.reference_files.items():
                f = path / f"latest_net_{stem}.pth"
                if f.exists():
                    load_weights(self.nets[name], safe_load(f), str(f))
                    loaded.append(name)
            if not any(n in loaded for n in self.generators):
                files = ", ".join(f"latest_net_{self.reference_files[n]}.pth" for n in self.generators)
                raise UserError(f"--init-weights {source}: no fastcycle checkpoint and no {files} in it")
            return loaded
        state = load_checkpoint(path)
        saved = state["model"]["nets"]
        missing = [n for n in self.nets if n not in saved]
        if missing:
            raise UserError(
                f"--init-weights {source} holds {', '.join(saved)} but this model needs "
                f"{', '.join(self.nets)}: it is another --model"
            )
        for name, net in self.nets.items():
            load_weights(net, saved[name], f"{source} ({name})")
            loaded.append(name)
        return loaded
