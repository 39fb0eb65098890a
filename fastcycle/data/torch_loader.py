"""`--loader torch`: PIL decode in DataLoader worker processes, pinned uint8 batches, async copies."""

from __future__ import annotations

import os
from collections.abc import Iterator

from torch.utils.data import DataLoader

from fastcycle.data.loader import Batch, LoaderSpec, to_device
from fastcycle.data.unaligned import EpochSampler, UnalignedDataset, collate


class TorchLoader:
    name = "torch"

    def __init__(self, spec: LoaderSpec, num_workers: int):
        self.spec = spec
        self.dataset = UnalignedDataset(
            [f.path for f in spec.A.images],
            [f.path for f in spec.B.images],
            spec.policy,
            spec.load_size,
            spec.crop_size,
            spec.flip,
            spec.serial_batches,
            spec.seed,
        )
        self.sampler = EpochSampler(spec.pairs, spec.batch_size, spec.rank, spec.world_size)
        # More decode processes than cores only adds context switches and memory.
        workers = min(num_workers, os.cpu_count() or 1)
        self.loader = DataLoader(
            self.dataset,
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
            A, B = to_device(b["A"], d, cl), to_device(b["B"], d, cl)
            yield Batch(A, B, b["skipped"], b["index_A"], b["index_B"])

    def state_dict(self) -> dict:
        return {}
