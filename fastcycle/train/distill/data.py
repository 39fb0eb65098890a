"""The student's data: the teacher's own training set, with the teacher's input domain as Batch.A.

Unpaired data needs no targets: the teacher's translation of each image is the target. Batch.B holds
the output domain's real images (a CycleGAN teacher: trainB for AtoB; pix2pix: each pair's target),
which only the optional discriminator reads.

Held-out images for the report: the teacher's test images of the input domain when the dataset has
them (testA for AtoB; pix2pix: test/ A|B images or testA/), else the last tenth of the training
images in file order, kept out of training (fastcycle.train.heldout's convention). `held_out.json`
in the run folder lists them, so the report reads exactly these. The real side of the report's FID and
KID is the target domain's test images (testB for AtoB; pix2pix: test/'s right halves or testB/), which
neither generator trained on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from fastcycle.atomic import write_atomic
from fastcycle.config import TrainConfig
from fastcycle.data.aligned import AlignedLoader, find_pairs
from fastcycle.data.contract import LoaderSpec
from fastcycle.data.folders import load_image
from fastcycle.data.loader import build_loader
from fastcycle.data.scan import scan_domain
from fastcycle.errors import UserError
from fastcycle.train.data import DataSource, log_scans, spec_fields
from fastcycle.train.distill.teacher import read_teacher
from fastcycle.train.env import RunEnv
from fastcycle.train.heldout import keep_out, test_images
from fastcycle.train.runlog import log

HELD_OUT_NAME = "held_out.json"


def open_student_data(cfg: TrainConfig, root: Path, env: RunEnv, state: dict | None) -> DataSource:
    """The loader over the teacher's training data under `root` for the student, and held_out.json
    written in the run folder. A CycleGAN teacher's data is read by the --loader choice, a pix2pix
    teacher's pairs by the torch loader."""
    family = read_teacher(cfg.distill.teacher).family  # cycle_gan or pix2pix
    d, direction = cfg.data, cfg.data.direction
    source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
    fields = spec_fields(cfg, env)
    if family == "pix2pix":
        if d.loader not in ("auto", "torch"):
            raise UserError(
                f"a pix2pix teacher's pairs are read with --loader torch; drop --loader {d.loader}"
            )
        files = find_pairs(root, d.max_dataset_size)
        nc_source, nc_target = cfg.model.input_nc, cfg.model.output_nc
        # The left/trainA side is the input unless the teacher translates BtoA.
        left_right = (nc_target, nc_source) if direction == "BtoA" else (nc_source, nc_target)
        log_scans(files.scans, left_right[: len(files.scans)], files.unmatched)
        held, where = test_images(root, source, paired=True)
        if not held:
            keep = len(files.pairs) - keep_out(len(files.pairs))
            if files.layout == "train":
                held = [(str(p), "left" if source == "A" else "right") for p, _ in files.pairs[keep:]]
            else:
                held = [(str(pair[0 if source == "A" else 1]), None) for pair in files.pairs[keep:]]
            sides = dataclasses.replace(files.A, images=files.A.images[:keep])
            files = dataclasses.replace(files, pairs=files.pairs[:keep], A=sides)
            where = f"the last {len(held)} training pairs, kept out of training"
        loader = AlignedLoader(files, LoaderSpec(files.A, None, **fields), direction, d.num_workers)
        note = loader.note
    else:
        scans = [scan_domain(root, f"train{x}", d.max_dataset_size) for x in (source, target)]
        log_scans(scans, [cfg.model.input_nc, cfg.model.output_nc])
        held, where = test_images(root, source, paired=False)
        if not held:
            images = scans[0].images
            keep = len(images) - keep_out(len(images))
            held = [(str(f.path), None) for f in images[keep:]]
            scans[0] = dataclasses.replace(scans[0], images=images[:keep])
            where = f"the last {len(held)} of train{source}, kept out of training"
        spec = LoaderSpec(*scans, **fields)  # Batch.A: the source domain, whichever folder it is
        loader, note = build_loader(d, spec, env.run_dir, state.get("loader") if state else None, log)
        note = f"{note}, train{source} -> train{target}"
    if not held:
        raise UserError(f"{root} has too few images to hold any out for the report; add test{source}/")
    log(f"data: held out for the report: {len(held)} images, {where} (listed in {HELD_OUT_NAME})")
    if env.dist.is_main:
        payload = {"where": where, "images": [{"path": str(Path(p).resolve()), "half": h} for p, h in held]}
        write_atomic(env.run_dir / HELD_OUT_NAME, lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))
    return DataSource(root, loader, note)


def held_out_images(run_dir: Path, limit: int = 0, nc: int = 3) -> tuple[list[tuple[str, np.ndarray]], str]:
    """The run's held-out images as (name, (H, W, nc) uint8), and where they came from; unreadable ones
    are left out. limit: at most this many (0: all); nc: the channels the generators take."""
    path = Path(run_dir) / HELD_OUT_NAME
    if not path.is_file():
        raise UserError(f"{run_dir} has no {HELD_OUT_NAME}; is it a `fastcycle distill` run?")
    listing = json.loads(path.read_text())
    items = [(item["path"], item["half"]) for item in listing["images"][: limit or None]]
    return read_listed(items, nc), listing["where"]


def read_listed(items: list[tuple[str, str | None]], nc: int) -> list[tuple[str, np.ndarray]]:
    """(path, half) items -> (name, (H, W, nc) uint8), the named half of an A|B image cropped out;
    unreadable files are left out."""
    out = []
    for path, half in items:
        try:
            img = load_image(Path(path), nc)
        except OSError:
            continue
        if half:
            w, h = img.size
            img = img.crop((0, 0, w // 2, h) if half == "left" else (w // 2, 0, w, h))
        arr = np.asarray(img)
        out.append((Path(path).name, arr[..., None] if arr.ndim == 2 else arr))
    return out


def target_images(root: Path, direction: str, paired: bool) -> tuple[list[tuple[str, str | None]], str]:
    """(path, half) of the target domain's test images under the data root `root`, and where they are:
    the real images the report's FID and KID compare both generators' translations with; ([], "") when
    the dataset has none."""
    return test_images(Path(root), "B" if direction == "AtoB" else "A", paired)
