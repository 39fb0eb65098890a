"""`--loader`: which of the three loaders reads unpaired (CycleGAN) data, and why.

All three honour fastcycle.data.contract (LoaderSpec in, Batches out, exact resume):

- torch: PIL decode in DataLoader worker processes, pinned uint8 batches, non-blocking copies.
- gpu-cache: every image decoded and resized once into device memory; a step is one gather.
- dali: NVIDIA DALI decodes, resizes, crops, flips and normalises on the GPU (CPU operators without one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from fastcycle.config import DataConfig
from fastcycle.data.contract import Loader, LoaderSpec, check_spec


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


def build_loader(
    cfg: DataConfig,
    spec: LoaderSpec,
    work_dir: Path,
    state: dict | None = None,
    say: Callable[[str], object] = print,
) -> tuple[Loader, str]:
    """(loader, note): the `--loader` choice built for `spec`; `auto` says what it picked and why.
    state: a resumed run's loader state; say: where a loader's remark about it goes (the run log)."""
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

        loader = DaliLoader(spec, work_dir, cfg.num_workers, cfg.prefetch, state, say)
    else:
        from fastcycle.data.torch_loader import TorchLoader
        from fastcycle.data.unaligned import UnalignedDataset

        loader = TorchLoader(spec, UnalignedDataset(spec), cfg.num_workers)
    return loader, f"loader {choice} ({why})"
