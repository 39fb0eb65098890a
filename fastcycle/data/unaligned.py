"""Unpaired A/B dataset (the reference's `UnalignedDataset`) and its epoch sampler.

Every random choice is keyed on (seed, epoch, index), never on worker state, so a run is reproducible
with any number of workers and can resume mid-epoch at exactly the next batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fastcycle.data.folders import load_rgb
from fastcycle.data.transforms import preprocess


class UnalignedDataset(Dataset):
    """Item `(epoch, i)`: A[i mod |A|] with B[i mod |B|] (serial) or a random B.

    An epoch is max(|A|, |B|) items, the smaller domain wrapping around, as in the reference.
    """

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

    def _load(
        self, paths: list[Path], index: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, list[str]]:
        """Decode paths[index]; an unreadable file is replaced by the next readable one and reported."""
        skipped = []
        for k in range(len(paths)):
            path = paths[(index + k) % len(paths)]
            try:
                img = load_rgb(path)
            except OSError:
                skipped.append(str(path))
                continue
            return preprocess(img, self.policy, self.load_size, self.crop_size, self.flip, rng), skipped
        raise RuntimeError(f"no readable image among {len(paths)} files, e.g. {paths[0]}")

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        rng = np.random.default_rng((self.seed, epoch, i))
        j = i % len(self.paths_B) if self.serial_batches else int(rng.integers(len(self.paths_B)))
        A, skipped_A = self._load(self.paths_A, i % len(self.paths_A), rng)
        B, skipped_B = self._load(self.paths_B, j, rng)
        return {"A": A, "B": B, "skipped": skipped_A + skipped_B}


class EpochSampler(Sampler):
    """Yields `(epoch, i)` keys in a shuffled (or serial) order, starting `start` items into the epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return iter([(self.epoch, i) for i in order[self.start :]])


def collate(items: list[dict]) -> dict:
    return {
        "A": torch.stack([it["A"] for it in items]),  # (N, 3, H, W) uint8
        "B": torch.stack([it["B"] for it in items]),
        "skipped": [p for it in items for p in it["skipped"]],
    }
