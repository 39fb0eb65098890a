"""The three training loaders behind `--loader`, what they share, and how one is chosen.

Every loader yields `Batch`es of float [-1, 1] tensors on the training device (channels-last when
asked), from the same scanned file lists, the same preprocessing sizes (fastcycle.data.transforms) and
the same epoch length and per-rank shards (fastcycle.data.plan):

- torch: PIL decode in DataLoader worker processes, pinned uint8 batches, non-blocking copies.
- gpu-cache: every image decoded and resized once into device memory; a step is one gather.
- dali: NVIDIA DALI decodes, resizes, crops, flips and normalises on the GPU (CPU operators without one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fastcycle.config import DataConfig
from fastcycle.data.plan import steps_per_epoch
from fastcycle.data.scan import DomainScan
from fastcycle.data.transforms import CROPPING, prepared_size, to_model_range
from fastcycle.errors import UserError


@dataclass
class Batch:
    A: torch.Tensor  # (N, 3, H, W) float in [-1, 1] on the training device
    B: torch.Tensor | None = None  # None for one-domain data (DCGAN)
    skipped: list[str] = field(default_factory=list)  # files that turned unreadable since the scan
    # (N,) int64: which scanned file of each domain each image came from (labels for --aux-classifier).
    index_A: torch.Tensor | None = None
    index_B: torch.Tensor | None = None


@dataclass(frozen=True)
class LoaderSpec:
    """What every loader needs: the data, the preprocessing, the batch, the device and the shard."""

    A: DomainScan
    B: DomainScan
    policy: str
    load_size: int
    crop_size: int
    flip: bool
    serial_batches: bool
    seed: int
    batch_size: int
    device: torch.device
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def pairs(self) -> int:
        """Positions per epoch: the larger domain's size."""
        return max(len(self.A.images), len(self.B.images))

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.pairs, self.batch_size, self.world_size)

    @property
    def crop(self) -> int | None:
        return self.crop_size if self.policy in CROPPING else None

    def prepared_sizes(self, scan: DomainScan) -> np.ndarray:
        """(n, 2) int64 (width, height) of each image after the deterministic resizes."""
        sizes = [prepared_size(self.policy, *f.size, self.load_size, self.crop_size) for f in scan.images]
        return np.array(sizes, dtype=np.int64).reshape(-1, 2)


class Loader(Protocol):
    name: str
    spec: LoaderSpec

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch`, from batch `start_step` on (for an exact resume)."""
        ...

    def state_dict(self) -> dict:
        """What an exact resume needs beyond (epoch, step); empty for the plan-driven loaders."""
        ...


def check_spec(spec: LoaderSpec) -> None:
    """Refuse what no loader can batch, before any decoding."""
    if spec.steps_per_epoch == 0:
        raise UserError(
            f"--batch-size {spec.batch_size} x {spec.world_size} process(es) exceeds the dataset's "
            f"{spec.pairs} pairs; lower --batch-size or add images"
        )
    if spec.crop is None and spec.batch_size > 1:
        for scan in (spec.A, spec.B):
            sizes = {tuple(s) for s in spec.prepared_sizes(scan).tolist()}
            if len(sizes) > 1:
                example = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:2])
                raise UserError(
                    f"--preprocess {spec.policy} leaves {scan.name} at {len(sizes)} different sizes "
                    f"(e.g. {example}), which cannot share a batch; use --batch-size 1 or a cropping "
                    "--preprocess such as resize_and_crop"
                )


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (N, 3, H, W) on the host -> float [-1, 1] on `device`, optionally NHWC in memory."""
    x = batch.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return to_model_range(x)


def default_cache_budget(device: torch.device) -> int:
    """A quarter of the device's memory (host memory for a CPU run): the rest is the step's."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def build_loader(cfg: DataConfig, spec: LoaderSpec, work_dir: Path, state: dict | None = None):
    """(loader, note): the `--loader` choice built for `spec`; `auto` says what it picked and why."""
    from fastcycle.data import gpu_cache

    check_spec(spec)
    budget = int(cfg.cache_budget_gb * 2**30) if cfg.cache_budget_gb else default_cache_budget(spec.device)
    choice, why = cfg.loader, "as asked"
    if choice == "auto":
        need = gpu_cache.cache_bytes(spec)
        if spec.device.type != "cuda":
            choice, why = "torch", "no CUDA device"
        elif need <= budget:
            choice, why = "gpu-cache", f"the dataset needs {need / 2**30:.2f} GiB of the {budget / 2**30:.1f}"
        elif dali_available():
            choice, why = "dali", "the dataset does not fit the gpu-cache budget"
        else:
            choice, why = "torch", "too large for gpu-cache and DALI is not installed"
    if choice == "gpu-cache":
        loader = gpu_cache.GpuCacheLoader(spec, budget, cfg.num_workers)
    elif choice == "dali":
        from fastcycle.data.dali_loader import DaliLoader  # imports DALI (half a second): only when used

        loader = DaliLoader(spec, work_dir, cfg.num_workers, cfg.prefetch, state)
    else:
        from fastcycle.data.torch_loader import TorchLoader

        loader = TorchLoader(spec, cfg.num_workers)
    return loader, f"loader {choice} ({why})"
