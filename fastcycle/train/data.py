"""A run's data: what every model family's `open_data` shares.

Each family (CycleGAN, Pix2Pix, DCGAN) opens its own data in its `open_data` classmethod: it scans its
folders, reports what the scan skipped or converted, and builds its loader from the LoaderSpec fields
below. What they share lives here: the dataset root (the built-in demo, built once by rank 0, when
--data is not given), those fields, the run-log lines, and --aux-classifier's class labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastcycle.config import TrainConfig
from fastcycle.data import demo
from fastcycle.data.contract import Loader
from fastcycle.data.scan import DomainScan
from fastcycle.train.env import RunEnv
from fastcycle.train.heldout import HeldOut
from fastcycle.train.runlog import log


@dataclass
class DataSource:
    root: Path  # the dataset folder (the demo's inside the run folder without --data)
    loader: Loader
    note: str  # which data and loader, for the start-up line
    # --aux-classifier: (n_A,) and (n_B,) int64 class of each scanned file (-1: unlabelled), and how many.
    labels: tuple[torch.Tensor, torch.Tensor] | None = None
    n_classes: int = 0
    held_out: HeldOut | None = None  # --eval-every: the images each direction is measured on


def data_root(cfg: TrainConfig, env: RunEnv) -> Path:
    """--data, or the built-in demo dataset (CycleGAN, and the student of a demo CycleGAN), which rank 0
    builds in the run folder."""
    if cfg.data.data is not None:
        return Path(cfg.data.data)
    root = env.run_dir / "demo_data"
    if env.dist.is_main:
        demo.build(root)
        log(f"data: built-in demo ({demo.DESCRIPTION}) in {root}")
    if env.dist.enabled:
        torch.distributed.barrier()  # the other ranks read what rank 0 wrote
    return root


def spec_fields(cfg: TrainConfig, env: RunEnv) -> dict[str, Any]:
    """LoaderSpec's fields after the data (A, B): the preprocessing, batch, device and shard."""
    d = cfg.data
    return dict(
        policy=d.preprocess,
        load_size=d.load_size,
        crop_size=d.crop_size,
        flip=not d.no_flip,
        serial_batches=d.serial_batches,
        seed=cfg.runtime.seed,
        batch_size=cfg.optim.batch_size,
        device=env.device,
        channels_last=cfg.runtime.channels_last,
        rank=env.dist.rank,
        world_size=env.dist.world_size,
        nc_A=cfg.model.input_nc,  # the reference's: A images feed G_AB, B images are what it makes
        nc_B=cfg.model.output_nc,
    )


def log_scans(
    scans: list[DomainScan],
    ncs: Sequence[int],
    unmatched: Sequence[str] = (),
    sides: Sequence[tuple[str, DomainScan, int]] = (),
) -> None:
    """One line per scanned folder, and one per kind of conversion and folder with its count ("data:
    trainA: 3 images converted RGBA to RGB (alpha dropped)"); the run log names every skipped, unmatched
    and converted file (but for the channel conversion, which usually concerns a whole folder). ncs: the
    channels each scan's images are decoded to; sides: more (label, scan, channels) to count
    conversions for (pix2pix's train/ halves, when they differ)."""
    for scan in scans:
        log(f"data: {scan.summary()}")
        for path, why in scan.skipped:
            log(f"data: skipped {path}: {why}", to_terminal=False)
        for f in scan.images:
            if f.notes:
                log(f"data: converted {f.path}: {', '.join(f.notes)}", to_terminal=False)
    for label, scan, nc in [*((s.name, s, nc) for s, nc in zip(scans, ncs, strict=True)), *sides]:
        for note, n in scan.conversion_counts(nc).items():
            log(f"data: {label}: {n:,} image{'s' if n > 1 else ''} converted {note}")
    for name in unmatched:  # the start-up note counts them; the run log names them
        log(f"data: unmatched {name}", to_terminal=False)


def class_labels(cfg: TrainConfig, scans: list[DomainScan]) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """--aux-classifier: each scanned file's class from the CSVs (-1: unlabelled), and the class count."""
    from fastcycle.data.labels import load_domain_labels

    d = cfg.data
    table = load_domain_labels({"A": d.labels_A, "B": d.labels_B}, {"A": scans[0], "B": scans[1]})
    for line in table.summary().splitlines():
        log(f"labels: {line}")
    for row in table.unmatched:  # the summary counts them; the run log names them
        log(f"labels: no such image: {row}", to_terminal=False)
    return (torch.from_numpy(table.A), torch.from_numpy(table.B)), len(table.classes)
