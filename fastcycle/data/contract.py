"""What every training loader is and gives: the contract the loaders, the data opening and the step share.

A loader is built from a `LoaderSpec` (the vetted files, the preprocessing, the batch, the device and
this rank's shard) and yields `Batch`es of float [-1, 1] tensors on the training device, channels-last
when asked, from batch `start_step` of an epoch on. Every loader, for every model family, reads the
same scanned file lists at the same prepared sizes (fastcycle.data.transforms), with the same epoch
length and per-rank shards (fastcycle.data.plan). This module imports no loader: loaders import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from fastcycle.data.plan import steps_per_epoch
from fastcycle.data.scan import DomainScan
from fastcycle.data.transforms import CROPPING, prepared_size, to_model_range
from fastcycle.errors import UserError


@dataclass
class Batch:
    A: torch.Tensor  # (N, nc_A, H, W) float in [-1, 1] on the training device
    B: torch.Tensor | None = None  # (N, nc_B, H, W); None for one-domain data (DCGAN)
    skipped: list[str] = field(default_factory=list)  # files that turned unreadable since the scan
    # (N,) int64: which scanned file of each domain each image came from (labels for --aux-classifier).
    index_A: torch.Tensor | None = None
    index_B: torch.Tensor | None = None


@dataclass(frozen=True)
class LoaderSpec:
    """What every loader needs: the data, the preprocessing, the batch, the device and the shard.

    Unpaired data (CycleGAN) reads A and B each in its own order. Paired data (pix2pix) and one folder
    (DCGAN) have B None: A lists the items an epoch's positions index, at the size that sets the batch
    shape (a pair's A side; its B side follows it)."""

    A: DomainScan
    B: DomainScan | None
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
    # Channels of Batch.A and Batch.B (1: grayscale, 3: RGB): every file is converted to them on decoding.
    # CycleGAN: input_nc and output_nc; pix2pix: the generator's input and target; DCGAN: output_nc.
    nc_A: int = 3
    nc_B: int = 3

    @property
    def scans(self) -> list[DomainScan]:
        return [self.A] if self.B is None else [self.A, self.B]

    @property
    def pairs(self) -> int:
        """Positions per epoch: the larger domain's size (the item count for one list)."""
        return max(len(s.images) for s in self.scans)

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


def check_spec(spec: LoaderSpec, items: str = "pairs") -> None:
    """Refuse what no loader can batch, before any decoding: fewer `items` than one global batch, or
    (without a crop) images that the policy leaves at different sizes."""
    if spec.steps_per_epoch == 0:
        raise UserError(
            f"--batch-size {spec.batch_size} x {spec.world_size} process(es) exceeds the dataset's "
            f"{spec.pairs} {items}; lower --batch-size or add images"
        )
    if spec.crop is None and spec.batch_size > 1:
        for scan in spec.scans:
            sizes = {tuple(s) for s in spec.prepared_sizes(scan).tolist()}
            if len(sizes) > 1:
                example = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:2])
                raise UserError(
                    f"--preprocess {spec.policy} leaves {scan.name} at {len(sizes)} different sizes "
                    f"(e.g. {example}), which cannot share a batch; use --batch-size 1 or a cropping "
                    "--preprocess such as resize_and_crop"
                )


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (N, C, H, W) on the host -> float [-1, 1] on `device`, optionally NHWC in memory."""
    x = batch.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return to_model_range(x)
