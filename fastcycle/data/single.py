"""One folder of images for `--model dcgan`: images directly in the folder or in its subfolders.

The images are one list of items for the shared machinery: LoaderSpec.A is the folder's scan (B is
None), the epoch plan is fastcycle.data.plan.item_plan (a shuffled order, or file order with
`--serial-batches`, and crop x, crop y, flip uniforms per position), and the torch loader batches them
with the same shards and exact resume as every other loader. Batch.B is None; Batch.index_A the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from fastcycle.data.contract import LoaderSpec, check_spec
from fastcycle.data.plan import ItemPlan, item_plan
from fastcycle.data.scan import DomainScan, scan_domain
from fastcycle.data.torch_loader import TorchLoader, decode, read_or_next
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
    """Item (epoch, position) -> {"A": (nc_A, H, W) uint8, "index_A": file index, "skipped": [...]}."""

    def __init__(self, spec: LoaderSpec):
        self.paths, self.spec = [f.path for f in spec.A.images], spec

    def __len__(self) -> int:
        return len(self.paths)

    def plan(self, epoch: int) -> ItemPlan:
        return item_plan(self.spec.seed, epoch, len(self.paths), not self.spec.serial_batches)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, position = key
        plan = self.plan(epoch)
        img, i, skipped = read_or_next(
            len(self.paths), int(plan.order[position]), lambda k: decode(self.paths[k], self.spec.nc_A)
        )
        s = self.spec
        image = preprocess(img, s.policy, s.load_size, s.crop_size, s.flip, plan.u[position])
        return {"A": image, "index_A": i, "skipped": skipped}


class SingleFolderLoader(TorchLoader):
    """`--model dcgan`'s loader: Batch.A the real images, Batch.B None, index_A the scanned file."""

    def __init__(self, spec: LoaderSpec, num_workers: int):
        check_spec(spec, "images")
        super().__init__(spec, SingleDataset(spec), num_workers)
        self.scan, self.scans = spec.A, [spec.A]
        self.unmatched: list[str] = []
        self.note = f"dcgan data: {spec.A.folder}, {len(spec.A.images):,} images"
        if spec.A.skipped:
            self.note += f", {len(spec.A.skipped)} skipped (listed in the run log)"


def open_single(
    root: str | os.PathLike, num_workers: int, max_dataset_size: int = 0, **spec: Any
) -> SingleFolderLoader:
    """Scan the image folder `root` and build its loader; `spec`: LoaderSpec's fields after A and B.
    UserError for anything a user must fix."""
    scan = scan_folder(root, max_dataset_size)
    return SingleFolderLoader(LoaderSpec(scan, None, **spec), num_workers)
