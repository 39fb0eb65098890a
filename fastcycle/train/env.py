"""Where and how a run trains, resolved once from its config: the run folder, this process's rank and
device (fastcycle.train.distributed), the precision and the generator's kernels (fastcycle.runtime).
A family's networks need only the last four (ModelEnv): tests and benchmarks build one without a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastcycle.config import TrainConfig
from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.ranks import DistInfo
from fastcycle.runtime import Precision, resolve_kernels, resolve_precision


@dataclass(frozen=True)
class ModelEnv:
    """Where and how a model family's networks run: what each family is built with (beside its config)."""

    device: torch.device
    precision: Precision
    kernels: str = "torch"  # "torch" or "triton": what the generators are built with
    dist: DistInfo = field(default_factory=DistInfo)  # the rank under torchrun; one process by default


@dataclass(frozen=True, kw_only=True)
class RunEnv(ModelEnv):
    """A training run's ModelEnv, with its folder and the log line about its kernels."""

    run_dir: Path  # checkpoints, metrics, samples, train.log
    kernels_note: str  # one log line: which kernels and why


def model_kernels(cfg: TrainConfig, kernels: str, note: str) -> tuple[str, str]:
    """The resolved --kernels for this config: the fused Triton kernels implement the ResNet
    generator's layers only, so other generators run on torch's (cuDNN) layers."""
    if kernels == "torch" or GENERATOR_SPECS[cfg.model.netG].fused_kernels:
        return kernels, note
    # --kernels auto (validate() refuses --kernels triton with other generators)
    return "torch", f"kernels: torch (the fused kernels cover the ResNet generators, not {cfg.model.netG})"


def resolve_env(cfg: TrainConfig, run_dir: Path, dist: DistInfo, device: torch.device) -> RunEnv:
    rt = cfg.runtime
    precision = resolve_precision(rt.amp, rt.amp_dtype, device)
    kernels, note = model_kernels(cfg, *resolve_kernels(rt.kernels, device))
    return RunEnv(device, precision, kernels, dist, run_dir=run_dir, kernels_note=note)
