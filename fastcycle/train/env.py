"""Where and how a run trains, resolved once from its config: the run folder, this process's rank and
device (fastcycle.train.distributed), the precision and the generator's kernels (fastcycle.runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fastcycle.config import TrainConfig
from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.runtime import Precision, resolve_kernels, resolve_precision
from fastcycle.train.distributed import DistInfo


@dataclass(frozen=True)
class RunEnv:
    run_dir: Path  # checkpoints, metrics, samples, train.log
    device: torch.device
    precision: Precision
    kernels: str  # "torch" or "triton": what the generators are built with
    kernels_note: str  # one log line: which kernels and why
    dist: DistInfo


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
    return RunEnv(run_dir, device, precision, kernels, note, dist)
