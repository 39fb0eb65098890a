"""Held-out images: what a run is measured on and never trains on.

One convention for every measurement (the distillation report, FID/KID during training): the dataset's
own test images when it has them (testA/ and testB/; pix2pix: test/ with A|B halves side by side, or
testA/ + testB/), else the last tenth of the training images in file order, kept out of training.

For FID/KID during training (--eval-every) each direction is an EvalSet: the images its generator
translates and the real images of its target domain, at most --eval-images of each (the first in sorted
order; a held-out slice of the training images is cut to that size before it is kept out of training,
so a large dataset loses no more than it is measured on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastcycle.config import TrainConfig
from fastcycle.data.aligned import PairedFiles
from fastcycle.data.folders import list_images, load_image
from fastcycle.data.scan import DomainScan
from fastcycle.errors import UserError

HOLD_OUT_EVERY = 10  # without test images, the last 1/10 of the training images is held out

Item = tuple[Path, str | None]  # a file and the half of it that is the image: "left", "right", None (all)


def keep_out(n: int) -> int:
    """How many of n training images are held out when the dataset has no test images."""
    return max(1, n // HOLD_OUT_EVERY) if n >= 2 else 0


def test_images(root: Path, domain: str, paired: bool) -> tuple[list[Item], str]:
    """The dataset's own test images of `domain` (A or B) and where they are: test{domain}/, else for
    pix2pix (`paired`) the left (A) or right (B) halves of test/; ([], "") when it has none."""
    folder = Path(root) / f"test{domain}"
    if folder.is_dir() and (found := list_images(folder)):
        return [(p, None) for p in found], f"{folder.name}/"
    if paired and (Path(root) / "test").is_dir() and (found := list_images(Path(root) / "test")):
        half = "left" if domain == "A" else "right"
        return [(p, half) for p in found], f"test/ ({half} halves)"
    return [], ""


def read_item(item: Item, nc: int) -> np.ndarray:
    """(H, W, nc) uint8: the file decoded as the training loaders decode it, cut to its half."""
    path, half = item
    try:
        img = load_image(path, nc)
    except OSError as e:
        raise UserError(f"cannot read the held-out image {path} ({e}); remove it or fix it") from None
    if half is not None:
        w, h = img.size
        img = img.crop((0, 0, w // 2, h) if half == "left" else (w // 2, 0, w, h))
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


@dataclass(frozen=True)
class EvalSet:
    """One direction's evaluation: its generator's inputs and the real images of its target domain."""

    direction: str  # "AtoB" or "BtoA": the generator's (GANModel.generator), the records' label
    inputs: list[Item]  # what the generator translates
    reals: list[Item]  # what its translations are compared with
    input_nc: int  # the channels the generator takes
    output_nc: int  # and makes (the reals are read at these)


@dataclass(frozen=True)
class HeldOut:
    sets: list[EvalSet]
    where: str  # one line for the run log: which images, and whether training left them out


def _too_few(name: str, n: int) -> UserError:
    return UserError(
        f"--eval-every: {name} has {n} image(s); a tenth of them is too few to hold out the 2 that FID and "
        f"KID need: add test folders (testA/ and testB/, 2 images or more each) or more images"
    )


def cycle_held_out(cfg: TrainConfig, root: Path, scans: list[DomainScan]) -> tuple[list[DomainScan], HeldOut]:
    """CycleGAN: G_AB(testA) vs testB and G_BA(testB) vs testA; without both test folders (2 images or
    more each), the last tenth of trainA and of trainB instead, removed from `scans` (what training
    reads)."""
    limit, m = cfg.run.eval_images, cfg.model
    (test_A, _), (test_B, _) = test_images(root, "A", False), test_images(root, "B", False)
    if len(test_A) >= 2 and len(test_B) >= 2:
        A, B = test_A[:limit], test_B[:limit]
        where = f"testA/ ({len(A)}) and testB/ ({len(B)})"
    else:
        held, kept = [], []
        for scan in scans:
            images = scan.images
            k = min(keep_out(len(images)), limit)
            if k < 2:
                raise _too_few(scan.name, len(images))
            held.append([(f.path, None) for f in images[len(images) - k :]])
            kept.append(dataclasses.replace(scan, images=images[: len(images) - k]))
        (A, B), scans = held, kept
        where = f"the last {len(A)} of trainA and {len(B)} of trainB, kept out of training"
    sets = [
        EvalSet("AtoB", A, B, m.input_nc, m.output_nc),
        EvalSet("BtoA", B, A, m.output_nc, m.input_nc),
    ]
    return scans, HeldOut(sets, where)


def paired_held_out(cfg: TrainConfig, root: Path, files: PairedFiles) -> tuple[PairedFiles, HeldOut]:
    """pix2pix: G(the test images' input side) vs their target side, from testA/ + testB/ (2 images or
    more each), else test/'s A|B halves; without test images, the last tenth of the training pairs
    instead, removed from `files` (what training reads)."""
    root = Path(root)
    limit, m, direction = cfg.run.eval_images, cfg.model, cfg.data.direction
    (test_A, _), (test_B, _) = test_images(root, "A", False), test_images(root, "B", False)
    side_by_side = list_images(root / "test") if (root / "test").is_dir() else []
    if len(test_A) >= 2 and len(test_B) >= 2:
        A, B = test_A[:limit], test_B[:limit]
        where = f"testA/ ({len(A)}) and testB/ ({len(B)})"
    elif len(side_by_side) >= 2:
        A, B = [(p, "left") for p in side_by_side[:limit]], [(p, "right") for p in side_by_side[:limit]]
        where = f"test/ ({len(A)} A|B pairs)"
    else:
        n = len(files.pairs)
        k = min(keep_out(n), limit)
        if k < 2:
            raise _too_few("the training pairs", n)
        held = files.pairs[n - k :]
        if files.layout == "train":
            A, B = [(p, "left") for p, _ in held], [(p, "right") for p, _ in held]
        else:
            A, B = [(a, None) for a, _ in held], [(b, None) for _, b in held]
        sides = dataclasses.replace(files.A, images=files.A.images[: n - k])
        files = dataclasses.replace(files, pairs=files.pairs[: n - k], A=sides)
        where = f"the last {k} training pairs, kept out of training"
    inputs, reals = (A, B) if direction == "AtoB" else (B, A)
    return files, HeldOut([EvalSet(direction, inputs, reals, m.input_nc, m.output_nc)], where)
