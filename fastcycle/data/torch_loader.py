"""`--loader torch`: PIL decode in DataLoader worker processes, pinned uint8 batches, async copies.

One loader for every model family: it runs a Dataset whose items are keyed by (epoch, position) and
looked up in the epoch plan (fastcycle.data.plan), so nothing depends on worker state and any number of
workers reproduces a run. The datasets (unaligned.py, aligned.py, single.py) differ only in what one
item reads: {"A": (C, H, W) uint8, "index_A": file index, optional "B" and "index_B", "skipped": [...]}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from fastcycle.data.contract import Batch, LoaderSpec, to_device
from fastcycle.data.folders import load_image
from fastcycle.data.plan import rank_positions

T = TypeVar("T")


class UnreadableFileError(Exception):
    """A file that turned unreadable since the folder scan; args[0] is its path."""


def decode(path: Path, nc: int = 3) -> Image.Image:
    """load_image (8-bit, "L" for nc 1, "RGB" for 3), raising UnreadableFileError(path), not OSError."""
    try:
        return load_image(path, nc)
    except OSError:
        raise UnreadableFileError(str(path)) from None


def read_or_next(n: int, start: int, read: Callable[[int], T]) -> tuple[T, int, list[str]]:
    """read(i) for i = start, start + 1, ... (mod n) until one reads: (value, i, the paths skipped).

    The scan vetted every file, but one can change during a run: an unreadable item is replaced by the
    next readable one and reported, never a crash mid-epoch."""
    skipped: list[str] = []
    for k in range(n):
        i = (start + k) % n
        try:
            return read(i), i, skipped
        except UnreadableFileError as e:
            skipped.append(e.args[0])
    raise RuntimeError(f"no readable item left among {n}, e.g. {skipped[0]}")


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
    """Dataset items -> one host batch: (N, C, H, W) uint8 images, (N,) int64 file indices, skipped files."""
    out = {"skipped": [p for it in items for p in it["skipped"]]}
    for key in ("A", "B"):
        if key in items[0]:
            out[key] = torch.stack([it[key] for it in items])
            out[f"index_{key}"] = torch.tensor([it[f"index_{key}"] for it in items], dtype=torch.int64)
    return out


class TorchLoader:
    name = "torch"

    def __init__(self, spec: LoaderSpec, dataset: Dataset, num_workers: int):
        self.spec, self.dataset = spec, dataset
        self.sampler = EpochSampler(spec.pairs, spec.batch_size, spec.rank, spec.world_size)
        # More decode processes than cores only adds context switches and memory.
        workers = min(num_workers, os.cpu_count() or 1)
        self.loader = DataLoader(
            dataset,
            batch_size=spec.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            # uint8 batches: a quarter of float32's bytes to decode into, pin and copy.
            # Page-locked host memory makes the host-to-device copy asynchronous (non_blocking).
            pin_memory=spec.device.type == "cuda",
            persistent_workers=workers > 0,  # no worker start-up cost at each epoch
            prefetch_factor=4 if workers > 0 else None,  # absorbs slow files (large JPEGs)
        )

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch, start_step)
        d, cl = self.spec.device, self.spec.channels_last
        for b in self.loader:
            B = to_device(b["B"], d, cl) if "B" in b else None
            yield Batch(to_device(b["A"], d, cl), B, b["skipped"], b["index_A"], b.get("index_B"))

    def state_dict(self) -> dict:
        return {}
