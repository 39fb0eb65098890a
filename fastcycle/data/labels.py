"""Class labels for `--aux-classifier`: a CSV of `filename,label` rows per domain (`--labels-A/-B`).

- A first row `filename,label` (any case) is a header and skipped; blank lines are ignored.
- `filename` is the image's path relative to the domain folder (`cats/01.jpg`), optionally prefixed
  with the folder's name (`trainA/cats/01.jpg`), or its bare file name when no other image has it.
- Labels are strings (`smiling`); the class index is the label's position in the sorted union of the
  labels of both CSVs, so A and B share one class list. Images no row names are unlabelled (-1).

A row naming no scanned image (a typo, a file the scan skipped) is collected for a warning; only a CSV
of which NO row names an image is an error, since that is a CSV for another folder.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastcycle.data.scan import DomainScan
from fastcycle.errors import UserError


@dataclass
class LabelTable:
    classes: list[str]  # sorted label names; class index = position here
    A: np.ndarray  # (n_A,) int64 class per scanned A image (scan order), -1 when unlabelled
    B: np.ndarray  # (n_B,) int64
    unmatched: list[str] = field(default_factory=list)  # "labels.csv:12: x.jpg": rows naming no image
    names: dict[str, str] = field(default_factory=dict)  # "A" -> "trainA", for the summary
    sources: dict[str, str | None] = field(default_factory=dict)  # "A" -> CSV path or None

    def summary(self) -> str:
        """One line per domain: 'trainA: 120 of 1,000 images labelled, 2 classes (a 60, b 60)'."""
        lines = []
        for key in ("A", "B"):
            labels = getattr(self, key)
            name = self.names.get(key, f"train{key}")
            if self.sources.get(key) is None:
                lines.append(f"{name}: no labels file, all {len(labels):,} images unlabelled")
                continue
            counts = Counter(int(c) for c in labels if c >= 0)
            per_class = ", ".join(f"{self.classes[c]} {n:,}" for c, n in sorted(counts.items()))
            lines.append(
                f"{name}: {sum(counts.values()):,} of {len(labels):,} images labelled, "
                f"{len(counts)} classes ({per_class})"
            )
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} label rows name no image (listed in the run log)")
        return "\n".join(lines)


def _flag(key: str) -> str:
    return f"--labels-{key}" if key in ("A", "B") else "the labels file"


def _lookup(scan: DomainScan) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Relative path -> file index, and bare file name -> file indices."""
    by_path: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for i, f in enumerate(scan.images):
        by_path[f.path.relative_to(scan.folder).as_posix()] = i
        by_name.setdefault(f.path.name, []).append(i)
    return by_path, by_name


def _read_rows(csv_path: Path) -> list[tuple[int, str, str]]:
    """(line number, filename, label) of every data row; UserError on a malformed row."""
    rows = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        first = True
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            fields = [c.strip() for c in row]
            if first and [c.lower() for c in fields] == ["filename", "label"]:
                first = False
                continue
            first = False
            if len(fields) != 2 or not fields[0] or not fields[1]:
                raise UserError(
                    f"{csv_path}:{line}: expected `filename,label`, got {','.join(row)!r}; "
                    "one image and its label per line"
                )
            rows.append((line, fields[0], fields[1]))
    return rows


def _file_labels(csv_path: Path, scan: DomainScan) -> tuple[list[str | None], list[str]]:
    """The label of each scanned file (None: unlabelled) and the rows that name no file."""
    rows = _read_rows(csv_path)
    if not rows:
        raise UserError(f"{csv_path} lists no `filename,label` rows; add one line per labelled image")
    by_path, by_name = _lookup(scan)
    labels: list[str | None] = [None] * len(scan.images)
    unmatched: list[str] = []
    prefix = scan.folder.name + "/"
    for line, name, label in rows:
        rel = name.replace("\\", "/").removeprefix("./")
        index = by_path.get(rel)
        if index is None and rel.startswith(prefix):
            index = by_path.get(rel[len(prefix) :])
        if index is None and "/" not in rel:
            hits = by_name.get(rel, [])
            if len(hits) > 1:
                where = ", ".join(scan.images[i].path.relative_to(scan.folder).as_posix() for i in hits[:2])
                raise UserError(
                    f"{csv_path}:{line}: {name} is the name of {len(hits)} images in {scan.folder} "
                    f"({where}); use the path relative to the folder"
                )
            index = hits[0] if hits else None
        if index is None:
            unmatched.append(f"{csv_path}:{line}: {name}")
            continue
        if labels[index] is not None and labels[index] != label:
            raise UserError(
                f"{csv_path}:{line}: {name} is labelled {label}, but an earlier row labels it "
                f"{labels[index]}; keep one label per image"
            )
        labels[index] = label
    if len(unmatched) == len(rows):
        first = ", ".join(u.rsplit(": ", 1)[1] for u in unmatched[:3])
        raise UserError(
            f"{csv_path}: none of its {len(rows)} file names is an image in {scan.folder} (e.g. {first}); "
            "name images by their path relative to that folder or by their file name"
        )
    return labels, unmatched


def read_labels(csv_path: str | os.PathLike, scan: DomainScan) -> tuple[list[str], np.ndarray]:
    """(sorted classes in this CSV, (n,) int64 class per scanned file, -1 unlabelled) for one domain."""
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"labels file {path} does not exist; fix the path to the filename,label CSV")
    labels, _ = _file_labels(path, scan)
    classes = sorted({x for x in labels if x is not None})
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[x] if x is not None else -1 for x in labels], dtype=np.int64)


def load_domain_labels(
    paths: dict[str, str | os.PathLike | None], scans: dict[str, DomainScan]
) -> LabelTable:
    """Both domains' labels against one sorted class list. `paths`/`scans` are keyed "A" and "B"; a
    domain without a CSV is all unlabelled (-1)."""
    per_file: dict[str, list[str | None]] = {}
    unmatched: list[str] = []
    sources: dict[str, str | None] = {}
    for key in ("A", "B"):
        scan, csv_path = scans[key], paths.get(key)
        sources[key] = None if csv_path is None else str(csv_path)
        if csv_path is None:
            per_file[key] = [None] * len(scan.images)
            continue
        path = Path(csv_path)
        if not path.is_file():
            raise UserError(f"labels file {path} does not exist; fix {_flag(key)}")
        per_file[key], missed = _file_labels(path, scan)
        unmatched += missed
    classes = sorted({x for labels in per_file.values() for x in labels if x is not None})
    given = " and ".join(s for s in sources.values() if s) or "no labels file"
    if not classes:
        raise UserError(
            f"no image is labelled ({given}); pass --labels-A and/or --labels-B with filename,label rows"
        )
    if len(classes) < 2:
        raise UserError(
            f"{given} name only one class ({classes[0]}); --aux-classifier needs at least 2 classes"
        )
    index = {c: i for i, c in enumerate(classes)}
    arrays = {
        key: np.array([index[x] if x is not None else -1 for x in labels], dtype=np.int64)
        for key, labels in per_file.items()
    }
    names = {key: scans[key].name for key in ("A", "B")}
    return LabelTable(classes, arrays["A"], arrays["B"], unmatched, names, sources)
