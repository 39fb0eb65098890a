"""One folder of images for `--model dcgan`: images directly in the folder or in its subfolders.

The same conventions as every other loader: the folder is vetted once by fastcycle.data.scan, the epoch
plan is keyed on (seed, epoch) alone (fastcycle.data.aligned.item_plan: a shuffled order, or file order
with `--serial-batches`, and crop x, crop y, flip uniforms per position), ranks take plan.rank_positions
shards and a resume at (epoch, step) sees the same batches. Batch.B is None; Batch.index_A the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from fastcycle.data.aligned import ItemPlan, PairedSpec, PlanLoader, check_batchable, item_plan
from fastcycle.data.folders import load_rgb
from fastcycle.data.scan import DomainScan, scan_domain
from fastcycle.data.transforms import preprocess
from fastcycle.errors import UserError


def scan_folder(root: str | os.PathLike, max_dataset_size: int = 0) -> DomainScan:
    """Vet every image under `root` (recursively); UserError when it is missing or holds none."""
    folder = Path(root).resolve()
    if not folder.is_dir():
        raise UserError(f"image folder {root} does not exist; pass --data DIR holding the training images")
    if folder.parent == folder:  # the file system root: scan_domain needs a parent and a name
        raise UserError(f"--data {root} is the file system root; pass the folder holding the images")
    return scan_domain(folder.parent, folder.name, max_dataset_size)


class SingleDataset(Dataset):
    """Item (epoch, position) -> {"A": (3, H, W) uint8, "index": file index, "skipped": [...]}."""

    def __init__(self, paths: list[Path], spec: PairedSpec):
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def plan(self, epoch: int) -> ItemPlan:
        return item_plan(self.spec.seed, epoch, len(self.paths), not self.spec.serial_batches)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, position = key
        plan = self.plan(epoch)
        index, u = int(plan.order[position]), plan.u[position]
        n, skipped = len(self.paths), []
        # An image unreadable since the scan is replaced by the next readable one and reported.
        for k in range(n):
            i = (index + k) % n
            try:
                img = load_rgb(self.paths[i])
            except OSError:
                skipped.append(str(self.paths[i]))
                continue
            s = self.spec
            image = preprocess(img, s.policy, s.load_size, s.crop_size, s.flip, u)
            return {"A": image, "index": i, "skipped": skipped}
        raise RuntimeError(f"no readable image left among {n} files, e.g. {self.paths[0]}")


class SingleFolderLoader(PlanLoader):
    """`--model dcgan`'s loader: Batch.A the real images, Batch.B None, index_A the scanned file."""

    def __init__(self, scan: DomainScan, spec: PairedSpec, num_workers: int):
        if spec.pairs != len(scan.images):
            raise ValueError(f"spec.pairs {spec.pairs} != {len(scan.images)} images scanned")
        check_batchable(spec, [f.size for f in scan.images], "images")
        self.spec, self.scan, self.scans = spec, scan, [scan]
        self.unmatched: list[str] = []
        self.note = f"dcgan data: {scan.folder}, {len(scan.images):,} images"
        if scan.skipped:
            self.note += f", {len(scan.skipped)} skipped (listed in the run log)"
        self._start(SingleDataset([f.path for f in scan.images], spec), num_workers)


def open_single(
    root: str | os.PathLike,
    policy: str,
    load_size: int,
    crop_size: int,
    flip: bool,
    serial_batches: bool,
    seed: int,
    batch_size: int,
    device: torch.device,
    channels_last: bool,
    num_workers: int,
    max_dataset_size: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> SingleFolderLoader:
    """Scan the image folder `root` and build its loader; UserError for anything a user must fix."""
    scan = scan_folder(root, max_dataset_size)
    spec = PairedSpec(
        len(scan.images),
        policy,
        load_size,
        crop_size,
        flip,
        serial_batches,
        seed,
        batch_size,
        device,
        channels_last,
        rank,
        world_size,
    )
    return SingleFolderLoader(scan, spec, num_workers)
