"""The PyTorch loader: PIL decode in worker processes, pinned uint8 batches, non-blocking copies."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from fastcycle.config import DataConfig
from fastcycle.data.folders import domain_images
from fastcycle.data.transforms import to_model_range
from fastcycle.data.unaligned import EpochSampler, UnalignedDataset, collate


@dataclass
class TrainData:
    loader: DataLoader
    sampler: EpochSampler
    dataset: UnalignedDataset

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.loader.batch_size

    def epoch(self, epoch: int, start_step: int = 0):
        """Iterate over the batches of `epoch`, skipping the first `start_step` (for an exact resume)."""
        self.sampler.set_epoch(epoch, start_step * self.loader.batch_size)
        return iter(self.loader)


def build_train_data(cfg: DataConfig, batch_size: int, seed: int, device: torch.device) -> TrainData:
    paths_A = domain_images(cfg.data, "trainA", cfg.max_dataset_size)
    paths_B = domain_images(cfg.data, "trainB", cfg.max_dataset_size)
    dataset = UnalignedDataset(
        paths_A,
        paths_B,
        cfg.preprocess,
        cfg.load_size,
        cfg.crop_size,
        flip=not cfg.no_flip,
        serial_batches=cfg.serial_batches,
        seed=seed,
    )
    if len(dataset) < batch_size:
        raise ValueError(f"--batch-size {batch_size} is larger than the dataset ({len(dataset)} images)")
    sampler = EpochSampler(len(dataset), seed, shuffle=not cfg.serial_batches)
    # More decode processes than cores only adds context switches and memory.
    workers = min(cfg.num_workers, os.cpu_count() or 1)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,  # equal batch shapes: no recompiles under --compile, steady memory
        # Page-locked host memory makes the host-to-device copy asynchronous (non_blocking below).
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    return TrainData(loader, sampler, dataset)


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (N, 3, H, W) on the host -> float [-1, 1] on `device`, optionally NHWC in memory."""
    x = batch.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return to_model_range(x)
