"""Paired A -> B data for `--model pix2pix` (the reference's `AlignedDataset`), and what the
one-list loaders (this one and fastcycle.data.single's) share.

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

The epoch plan is keyed on (seed, epoch) alone, like fastcycle.data.plan: a shuffled order of the pairs
(file order with `--serial-batches`) and three uniforms per position (crop x, crop y, flip). Ranks take
the same shards (plan.rank_positions) and a resume at (epoch, step) sees the same batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fastcycle.data.folders import load_rgb
from fastcycle.data.loader import Batch, to_device
from fastcycle.data.plan import steps_per_epoch
from fastcycle.data.scan import DomainScan, scan_domain
from fastcycle.data.transforms import BICUBIC, CROPPING, crop_flip, prepare, prepared_size
from fastcycle.data.unaligned import EpochSampler
from fastcycle.errors import UserError

DIRECTIONS = ("AtoB", "BtoA")


@dataclass(frozen=True)
class PairedSpec:
    """The preprocessing, batch, device and shard of a loader over one list of items (pairs or images)."""

    pairs: int  # items per epoch: pairs (pix2pix) or images (dcgan)
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

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.pairs, self.batch_size, self.world_size)

    @property
    def crop(self) -> int | None:
        return self.crop_size if self.policy in CROPPING else None


@dataclass(frozen=True)
class ItemPlan:
    order: np.ndarray  # (n,) int64: which item each position of the epoch reads
    u: np.ndarray  # (n, 3) float64 in [0, 1): crop x, crop y, flip


@lru_cache(maxsize=2)  # each worker process builds the current epoch's plan once, not per item
def item_plan(seed: int, epoch: int, n: int, shuffle: bool) -> ItemPlan:
    """The epoch's order and uniforms, keyed on (seed, epoch) alone."""
    rng_order, rng_u = (np.random.default_rng((seed, epoch, k)) for k in range(2))
    order = rng_order.permutation(n) if shuffle else np.arange(n)
    return ItemPlan(order.astype(np.int64), rng_u.random((n, 3)))


def check_batchable(spec: PairedSpec, sizes: list[tuple[int, int]], what: str) -> None:
    """Refuse, before any decoding, what cannot be batched: fewer items than one global batch, or
    (without a crop) images that the policy leaves at different sizes. `sizes`: (w, h) as stored."""
    if spec.steps_per_epoch == 0:
        raise UserError(
            f"--batch-size {spec.batch_size} x {spec.world_size} process(es) exceeds the dataset's "
            f"{spec.pairs} {what}; lower --batch-size or add images"
        )
    if spec.crop is None and spec.batch_size > 1:
        out = {prepared_size(spec.policy, w, h, spec.load_size, spec.crop_size) for w, h in sizes}
        if len(out) > 1:
            example = ", ".join(f"{w}x{h}" for w, h in sorted(out)[:2])
            raise UserError(
                f"--preprocess {spec.policy} leaves the {what} at {len(out)} different sizes "
                f"(e.g. {example}), which cannot share a batch; use --batch-size 1 "
                "or a cropping --preprocess such as resize_and_crop"
            )


def collate_items(items: list[dict]) -> dict:
    out = {
        "A": torch.stack([it["A"] for it in items]),  # (N, 3, H, W) uint8
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
        "skipped": [p for it in items for p in it["skipped"]],
    }
    if "B" in items[0]:
        out["B"] = torch.stack([it["B"] for it in items])
    return out


class PlanLoader:
    """DataLoader workers over a dataset keyed by (epoch, position): pinned uint8 batches, moved to the
    device as float [-1, 1]. Subclasses set `spec`, `scans`, `note` and call `_start`."""

    name = "torch"
    spec: PairedSpec
    scans: list[DomainScan]
    note: str

    def _start(self, dataset: Dataset, num_workers: int) -> None:
        spec = self.spec
        self.dataset = dataset
        self.sampler = EpochSampler(spec.pairs, spec.batch_size, spec.rank, spec.world_size)
        workers = min(num_workers, os.cpu_count() or 1)  # more processes than cores: only contention
        self.loader = DataLoader(
            dataset,
            batch_size=spec.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_items,
            pin_memory=spec.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch`, from batch `start_step` on."""
        self.sampler.set_epoch(epoch, start_step)
        d, cl = self.spec.device, self.spec.channels_last
        for b in self.loader:
            A = to_device(b["A"], d, cl)
            if "B" in b:
                yield Batch(A, to_device(b["B"], d, cl), b["skipped"], b["index"], b["index"])
            else:
                yield Batch(A, None, b["skipped"], b["index"])

    def state_dict(self) -> dict:
        return {}


# --- finding the pairs -------------------------------------------------------------------------------


@dataclass
class PairedFiles:
    layout: str  # "train" (A|B side by side) or "trainA+trainB" (paired by name)
    pairs: list[tuple[Path, Path | None]]  # (file, None) for `train/`; (A file, B file) otherwise
    sizes: list[tuple[int, int]]  # (w, h) of each pair's A side as stored (the left half for `train/`)
    scans: list[DomainScan]
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
    has_train = (root / "train").is_dir()
    has_ab = (root / "trainA").is_dir() and (root / "trainB").is_dir()
    if has_train:
        scan = scan_domain(root, "train", max_dataset_size)
        pairs, sizes, images = [], [], []
        for f in scan.images:
            w, h = f.size
            if w < 2:
                scan.skipped.append((f.path, f"{w} pixel(s) wide: no A|B halves to split"))
                continue
            images.append(f)
            pairs.append((f.path, None))
            sizes.append((w // 2, h))
        scan.images = images
        if not pairs:
            raise UserError(f"{scan.folder} holds no image wide enough to split into A|B halves")
        return PairedFiles("train", pairs, sizes, [scan], both_layouts=has_ab)
    if not has_ab:
        present = [d for d in ("trainA", "trainB") if (root / d).is_dir()]
        also = f" (found only {present[0]}/)" if present else ""
        raise UserError(
            f"{root} has neither train/ (A|B images side by side) nor trainA/ + trainB/ (pairs with the "
            f"same file names){also}; pix2pix needs one of them"
        )
    scan_A, scan_B = scan_domain(root, "trainA"), scan_domain(root, "trainB")
    by_key: dict[str, tuple[Path, tuple[int, int]]] = {}
    unmatched: list[str] = []
    for f in scan_B.images:
        k = _key(scan_B.folder, f.path)
        if k in by_key:  # x.jpg and x.png: which one is meant is a guess, so neither is a silent pick
            unmatched.append(f"trainB/{f.path.relative_to(scan_B.folder).as_posix()} (same name as another)")
        else:
            by_key[k] = (f.path, f.size)
    pairs, sizes, used = [], [], set()
    for f in scan_A.images:
        k = _key(scan_A.folder, f.path)
        if k in by_key and k not in used:
            used.add(k)
            pairs.append((f.path, by_key[k][0]))
            sizes.append(f.size)
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
        pairs, sizes = pairs[:max_dataset_size], sizes[:max_dataset_size]
    return PairedFiles("trainA+trainB", pairs, sizes, [scan_A, scan_B], sorted(unmatched))


# --- the dataset and loader --------------------------------------------------------------------------


def prepare_pair(
    A: Image.Image, B: Image.Image, policy: str, load_size: int, crop_size: int, flip: bool, u
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides of a pair resized, cropped and flipped identically; (3, H, W) uint8 each."""
    a = prepare(A, policy, load_size, crop_size)
    b = prepare(B, policy, load_size, crop_size)
    if b.size != a.size:
        b = B.resize(a.size, BICUBIC)  # one resize from the original, straight to A's prepared size
    crop = crop_size if policy in CROPPING else None
    arr_a, arr_b = np.asarray(a, dtype=np.uint8), np.asarray(b, dtype=np.uint8)
    return crop_flip(arr_a, crop, u, flip), crop_flip(arr_b, crop, u, flip)


class AlignedDataset(Dataset):
    """Item (epoch, position) -> {"A": input, "B": target, "index": pair index, "skipped": [...]}."""

    def __init__(self, pairs: list[tuple[Path, Path | None]], spec: PairedSpec, direction: str = "AtoB"):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.pairs, self.spec, self.swap = pairs, spec, direction == "BtoA"

    def __len__(self) -> int:
        return len(self.pairs)

    def plan(self, epoch: int) -> ItemPlan:
        return item_plan(self.spec.seed, epoch, len(self.pairs), not self.spec.serial_batches)

    def _read(self, index: int) -> tuple[Image.Image, Image.Image] | str:
        """The pair's two sides (left, right or trainA, trainB), or the path of the unreadable file."""
        path_a, path_b = self.pairs[index]
        try:
            A = load_rgb(path_a)
        except OSError:
            return str(path_a)
        if path_b is None:
            w, h = A.size
            return (A.crop((0, 0, w // 2, h)), A.crop((w // 2, 0, w, h))) if w >= 2 else str(path_a)
        try:
            return A, load_rgb(path_b)
        except OSError:
            return str(path_b)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, position = key
        plan = self.plan(epoch)
        index, u = int(plan.order[position]), plan.u[position]
        n, skipped = len(self.pairs), []
        # The scan vetted every file, but one can change during a run: an unreadable pair is replaced by
        # the next readable one and reported, never a crash mid-epoch.
        for k in range(n):
            i = (index + k) % n
            read = self._read(i)
            if isinstance(read, str):
                skipped.append(read)
                continue
            A, B = read
            s = self.spec
            a, b = prepare_pair(A, B, s.policy, s.load_size, s.crop_size, s.flip, u)
            if self.swap:
                a, b = b, a
            return {"A": a, "B": b, "index": i, "skipped": skipped}
        raise RuntimeError(f"no readable pair left among {n}, e.g. {self.pairs[0][0]}")


class AlignedLoader(PlanLoader):
    """`--model pix2pix`'s loader: Batch.A the input, Batch.B the target, index_A (= index_B) the pair."""

    def __init__(self, files: PairedFiles, spec: PairedSpec, direction: str, num_workers: int):
        if spec.pairs != len(files.pairs):
            raise ValueError(f"spec.pairs {spec.pairs} != {len(files.pairs)} pairs found")
        check_batchable(spec, files.sizes, "pairs")
        self.spec, self.files, self.direction = spec, files, direction
        self.scans = files.scans
        self.unmatched = files.unmatched
        self.note = f"{files.describe()}, {direction}"
        self._start(AlignedDataset(files.pairs, spec, direction), num_workers)


def open_aligned(
    root: str | os.PathLike,
    direction: str,
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
) -> AlignedLoader:
    """Scan `root` for pix2pix pairs and build their loader; UserError for anything a user must fix."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction must be AtoB or BtoA, got {direction}")
    files = find_pairs(root, max_dataset_size)
    spec = PairedSpec(
        len(files.pairs),
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
    return AlignedLoader(files, spec, direction, num_workers)
