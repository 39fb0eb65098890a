"""Unpaired A/B dataset (the reference's `UnalignedDataset`) for the torch loader, and its sampler.

Item `(epoch, position)` is looked up in the epoch plan (fastcycle.data.plan): which A and B file and
which crop and flip. Nothing depends on worker state, so any number of workers reproduces a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fastcycle.data.folders import load_rgb
from fastcycle.data.plan import epoch_plan, rank_positions
from fastcycle.data.transforms import preprocess


class UnalignedDataset(Dataset):
    def __init__(
        self,
        paths_A: list[Path],
        paths_B: list[Path],
        policy: str,
        load_size: int,
        crop_size: int,
        flip: bool,
        serial_batches: bool,
        seed: int,
    ):
        self.paths_A, self.paths_B = paths_A, paths_B
        self.policy, self.load_size, self.crop_size, self.flip = policy, load_size, crop_size, flip
        self.serial_batches, self.seed = serial_batches, seed

    def __len__(self) -> int:
        return max(len(self.paths_A), len(self.paths_B))

    def plan(self, epoch: int):
        return epoch_plan(self.seed, epoch, len(self.paths_A), len(self.paths_B), not self.serial_batches)

    def _load(self, paths: list[Path], index: int, u: np.ndarray) -> tuple[torch.Tensor, int, list[str]]:
        """Decode paths[index]. The folder scan vetted every file, but one can change during a run: an
        unreadable file is replaced by the next readable one and reported, never a crash mid-epoch."""
        skipped = []
        for k in range(len(paths)):
            path = paths[(index + k) % len(paths)]
            try:
                img = load_rgb(path)
            except OSError:
                skipped.append(str(path))
                continue
            image = preprocess(img, self.policy, self.load_size, self.crop_size, self.flip, u)
            return image, (index + k) % len(paths), skipped
        raise RuntimeError(f"no readable image left among {len(paths)} files, e.g. {paths[0]}")

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, position = key
        plan = self.plan(epoch)
        u = plan.u[position]
        A, index_A, skipped_A = self._load(self.paths_A, int(plan.a[position]), u[:3])
        B, index_B, skipped_B = self._load(self.paths_B, int(plan.b[position]), u[3:])
        return {"A": A, "B": B, "index_A": index_A, "index_B": index_B, "skipped": skipped_A + skipped_B}


class EpochSampler(Sampler):
    """Yields this rank's `(epoch, position)` keys in batch order, from batch `start_step` of the epoch."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def _positions(self) -> np.ndarray:
        return rank_positions(self.n, self.batch_size, self.rank, self.world_size, self.start_step).ravel()

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, int(p)) for p in self._positions()])


def collate(items: list[dict]) -> dict:
    return {
        "A": torch.stack([it["A"] for it in items]),  # (N, 3, H, W) uint8
        "B": torch.stack([it["B"] for it in items]),
        "index_A": torch.tensor([it["index_A"] for it in items]),  # (N,) int64
        "index_B": torch.tensor([it["index_B"] for it in items]),
        "skipped": [p for it in items for p in it["skipped"]],
    }
