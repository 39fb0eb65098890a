"""Paired A -> B data for `--model pix2pix` (the reference's `AlignedDataset`).

Two layouts under the data root:

- `train/`: each image holds A on its left half and B on its right half (the reference's format; the
  width is split at w // 2).
- `trainA/` + `trainB/`: A and B in separate files, paired by their path relative to the folder without
  the extension (`trainA/cat/01.jpg` <-> `trainB/cat/01.png`); unpaired files are reported, not used.

`train/` wins when both exist. `--direction BtoA` swaps the two sides after loading: Batch.A is always
the generator's input and Batch.B its target.

Both sides of a pair get the SAME resize, crop and flip (one set of plan uniforms per position): each
side goes through transforms.prepare, and a B side whose prepared size differs from its A side's (an
odd-width `train/` image, or different file sizes in `trainA/` + `trainB/`) is resized to A's instead,
so the crop offsets, computed once from A's size as the reference does, cut both at the same place.

The pairs are one list of items for the shared machinery: LoaderSpec.A lists their A sides (B is None),
the epoch plan is fastcycle.data.plan.item_plan, and the torch loader (fastcycle.data.torch_loader)
batches them with the same shards and exact resume as every other loader.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fastcycle.choices import DIRECTIONS
from fastcycle.data.contract import LoaderSpec, check_spec
from fastcycle.data.plan import ItemPlan, item_plan
from fastcycle.data.scan import DomainScan, scan_domain
from fastcycle.data.torch_loader import TorchLoader, UnreadableFileError, decode, read_or_next
from fastcycle.data.transforms import BICUBIC, CROPPING, crop_flip, prepare
from fastcycle.errors import UserError

# --- finding the pairs -------------------------------------------------------------------------------


@dataclass
class PairedFiles:
    layout: str  # "train" (A|B side by side) or "trainA+trainB" (paired by name)
    pairs: list[tuple[Path, Path | None]]  # (file, None) for `train/`; (A file, B file) otherwise
    A: DomainScan  # each pair's A side in pair order, at its stored size (the left half for `train/`)
    scans: list[DomainScan]  # the folders as scanned, with their skipped files (for the run log)
    unmatched: list[str] = field(default_factory=list)  # "trainA/x.png": files without a partner
    both_layouts: bool = False

    def describe(self) -> str:
        if self.layout == "train":
            line = f"pix2pix data: train/ (A|B side by side), {len(self.pairs):,} pairs"
        else:
            line = f"pix2pix data: trainA/ + trainB/ paired by file name, {len(self.pairs):,} pairs"
        if self.unmatched:
            line += f", {len(self.unmatched)} unmatched files (listed in the run log)"
        if self.both_layouts:
            line += "; trainA/ + trainB/ also exist and are ignored (train/ is preferred)"
        return line


def _key(folder: Path, path: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def find_pairs(root: str | os.PathLike, max_dataset_size: int = 0) -> PairedFiles:
    """Scan `root` for pix2pix pairs in either layout; UserError when neither is usable."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"dataset folder {root} does not exist; pass --data DIR holding train/ (A|B images side by "
            "side) or trainA/ + trainB/ (pairs with the same file names)"
        )
    has_ab = (root / "trainA").is_dir() and (root / "trainB").is_dir()
    if (root / "train").is_dir():
        return _side_by_side(root, max_dataset_size, both_layouts=has_ab)
    if not has_ab:
        present = [d for d in ("trainA", "trainB") if (root / d).is_dir()]
        also = f" (found only {present[0]}/)" if present else ""
        raise UserError(
            f"{root} has neither train/ (A|B images side by side) nor trainA/ + trainB/ (pairs with the "
            f"same file names){also}; pix2pix needs one of them"
        )
    return _paired_by_name(root, max_dataset_size)


def _side_by_side(root: Path, max_dataset_size: int, both_layouts: bool) -> PairedFiles:
    """The `train/` layout: each image is a pair, A its left half and B its right."""
    scan = scan_domain(root, "train", max_dataset_size)
    halves = DomainScan(scan.name, scan.folder)
    for f in scan.images:
        w, h = f.size
        if w < 2:
            scan.skipped.append((f.path, f"{w} pixel(s) wide: no A|B halves to split"))
            continue
        halves.images.append(dataclasses.replace(f, size=(w // 2, h)))
    scan.images = [f for f in scan.images if f.size[0] >= 2]
    if not halves.images:
        raise UserError(f"{scan.folder} holds no image wide enough to split into A|B halves")
    pairs = [(f.path, None) for f in halves.images]
    return PairedFiles("train", pairs, halves, [scan], both_layouts=both_layouts)


def _paired_by_name(root: Path, max_dataset_size: int) -> PairedFiles:
    """The `trainA/` + `trainB/` layout: files paired by their relative path without the extension."""
    scan_A, scan_B = scan_domain(root, "trainA"), scan_domain(root, "trainB")
    by_key: dict[str, tuple[Path, tuple[int, int]]] = {}
    unmatched: list[str] = []
    for f in scan_B.images:
        k = _key(scan_B.folder, f.path)
        if k in by_key:  # x.jpg and x.png: which one is meant is a guess, so neither is a silent pick
            unmatched.append(f"trainB/{f.path.relative_to(scan_B.folder).as_posix()} (same name as another)")
        else:
            by_key[k] = (f.path, f.size)
    pairs, sides, used = [], DomainScan(scan_A.name, scan_A.folder), set()
    for f in scan_A.images:
        k = _key(scan_A.folder, f.path)
        if k in by_key and k not in used:
            used.add(k)
            pairs.append((f.path, by_key[k][0]))
            sides.images.append(f)
        else:
            why = " (same name as another)" if k in used else ""
            unmatched.append(f"trainA/{f.path.relative_to(scan_A.folder).as_posix()}{why}")
    unmatched += [
        f"trainB/{p.relative_to(scan_B.folder).as_posix()}" for k, (p, _) in by_key.items() if k not in used
    ]
    if not pairs:
        a, b = scan_A.images[0].path.name, scan_B.images[0].path.name
        raise UserError(
            f"no file in {scan_A.folder} has a partner of the same name in {scan_B.folder} "
            f"(e.g. {a} vs {b}); pairs are matched by file name without the extension"
        )
    if max_dataset_size:
        pairs, sides.images = pairs[:max_dataset_size], sides.images[:max_dataset_size]
    return PairedFiles("trainA+trainB", pairs, sides, [scan_A, scan_B], sorted(unmatched))


# --- the dataset and loader --------------------------------------------------------------------------


def prepare_pair(
    A: Image.Image, B: Image.Image, policy: str, load_size: int, crop_size: int, flip: bool, u
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides of a pair resized, cropped and flipped identically; (C, H, W) uint8 each (C: the
    side's mode, 1 for "L", 3 for "RGB")."""
    a = prepare(A, policy, load_size, crop_size)
    b = prepare(B, policy, load_size, crop_size)
    if b.size != a.size:
        b = B.resize(a.size, BICUBIC)  # one resize from the original, straight to A's prepared size
    crop = crop_size if policy in CROPPING else None
    arr_a, arr_b = np.asarray(a, dtype=np.uint8), np.asarray(b, dtype=np.uint8)
    return crop_flip(arr_a, crop, u, flip), crop_flip(arr_b, crop, u, flip)


class AlignedDataset(Dataset):
    """Item (epoch, position) -> {"A": input, "B": target, "index_A" = "index_B": pair, "skipped": [...]}."""

    def __init__(self, pairs: list[tuple[Path, Path | None]], spec: LoaderSpec, direction: str = "AtoB"):
        self.pairs, self.spec, self.swap = pairs, spec, direction == "BtoA"

    def __len__(self) -> int:
        return len(self.pairs)

    def plan(self, epoch: int) -> ItemPlan:
        return item_plan(self.spec.seed, epoch, len(self.pairs), not self.spec.serial_batches)

    def _read(self, index: int) -> tuple[Image.Image, Image.Image]:
        """The pair's two sides (left, right or trainA, trainB), each at the channels of the Batch side it
        becomes (BtoA: the right side is the input); UnreadableFileError names the bad file."""
        path_a, path_b = self.pairs[index]
        nc_a, nc_b = (self.spec.nc_B, self.spec.nc_A) if self.swap else (self.spec.nc_A, self.spec.nc_B)
        if path_b is not None:
            return decode(path_a, nc_a), decode(path_b, nc_b)
        A = decode(path_a, nc_a)
        w, h = A.size
        if w < 2:
            raise UnreadableFileError(str(path_a))
        # One decode per side-by-side file; the right half takes its own channels when they differ.
        right = A if nc_a == nc_b else decode(path_a, nc_b)
        return A.crop((0, 0, w // 2, h)), right.crop((w // 2, 0, w, h))

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, position = key
        plan = self.plan(epoch)
        (A, B), i, skipped = read_or_next(len(self.pairs), int(plan.order[position]), self._read)
        s = self.spec
        a, b = prepare_pair(A, B, s.policy, s.load_size, s.crop_size, s.flip, plan.u[position])
        if self.swap:
            a, b = b, a
        return {"A": a, "B": b, "index_A": i, "index_B": i, "skipped": skipped}


class AlignedLoader(TorchLoader):
    """`--model pix2pix`'s loader: Batch.A the input, Batch.B the target, index_A (= index_B) the pair."""

    def __init__(self, files: PairedFiles, spec: LoaderSpec, direction: str, num_workers: int):
        check_spec(spec, "pairs")
        super().__init__(spec, AlignedDataset(files.pairs, spec, direction), num_workers)
        self.files, self.direction = files, direction
        self.scans, self.unmatched = files.scans, files.unmatched
        self.note = f"{files.describe()}, {direction}"

    def channel_targets(self) -> tuple[list[int], list[tuple[str, DomainScan, int]]]:
        """For the run log's conversion lines: the channels each of `scans` decodes to (the left or
        trainA side's), and train/'s right halves as one more side when theirs differ."""
        s = self.spec
        nc_left, nc_right = (s.nc_B, s.nc_A) if self.direction == "BtoA" else (s.nc_A, s.nc_B)
        if self.files.layout == "train":
            sides = [("train (right halves)", self.scans[0], nc_right)] if nc_right != nc_left else []
            return [nc_left], sides
        return [nc_left, nc_right], []


def open_aligned(
    root: str | os.PathLike, direction: str, num_workers: int, max_dataset_size: int = 0, **spec: Any
) -> AlignedLoader:
    """Scan `root` for pix2pix pairs and build their loader; `spec`: LoaderSpec's fields after A and B.
    UserError for anything a user must fix."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction must be AtoB or BtoA, got {direction}")
    files = find_pairs(root, max_dataset_size)
    return AlignedLoader(files, LoaderSpec(files.A, None, **spec), direction, num_workers)
