"""Unpaired A/B items (the reference's `UnalignedDataset`) for the torch loader.

Item `(epoch, position)` is looked up in the epoch plan (fastcycle.data.plan.epoch_plan): which A and
which B file, and the crop and flip of each.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fastcycle.data.contract import LoaderSpec
from fastcycle.data.plan import epoch_plan
from fastcycle.data.torch_loader import decode, read_or_next
from fastcycle.data.transforms import preprocess


class UnalignedDataset(Dataset):
    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        self.paths_A, self.paths_B = ([f.path for f in s.images] for s in (spec.A, spec.B))

    def __len__(self) -> int:
        return self.spec.pairs

    def plan(self, epoch: int):
        s = self.spec
        return epoch_plan(s.seed, epoch, len(self.paths_A), len(self.paths_B), not s.serial_batches)

    def _load(self, paths: list, index: int, u: np.ndarray, nc: int) -> tuple[torch.Tensor, int, list[str]]:
        s = self.spec
        img, i, skipped = read_or_next(len(paths), index, lambda k: decode(paths[k], nc))
        return preprocess(img, s.policy, s.load_size, s.crop_size, s.flip, u), i, skipped

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, position = key
        plan = self.plan(epoch)
        u = plan.u[position]
        A, index_A, skipped_A = self._load(self.paths_A, int(plan.a[position]), u[:3], self.spec.nc_A)
        B, index_B, skipped_B = self._load(self.paths_B, int(plan.b[position]), u[3:], self.spec.nc_B)
        return {"A": A, "B": B, "index_A": index_A, "index_B": index_B, "skipped": skipped_A + skipped_B}
