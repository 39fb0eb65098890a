"""A folder of real images -> its Inception features, cached by content.

The real side of an FID (testB of horse2zebra, a training run's held-out images) is the same at every
evaluation, and its features cost as much as the fake side's: they are computed once and kept as
`<key>.npy` under the cache folder ($FASTCYCLE_CACHE, else $XDG_CACHE_HOME/fastcycle, else
~/.cache/fastcycle), in `quality-features/`. The key is a SHA-256 over the weights file's hash, the
extractor's version and every image file's bytes in sorted-name order (the order KID's subsets index),
so an edited, added or removed image, or other weights, is a new entry; renaming the folder is not.
Entries are written atomically: a killed run leaves no partial entry behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastcycle.atomic import write_atomic
from fastcycle.data.folders import list_images, read_image
from fastcycle.errors import UserError
from fastcycle.quality.features import inception_features
from fastcycle.quality.inception import InceptionV3

EXTRACTOR_VERSION = "1"  # bump when the features change for the same weights and images (the resize)


def cache_folder() -> Path:
    if env := os.environ.get("FASTCYCLE_CACHE"):
        return Path(env) / "quality-features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastcycle" / "quality-features"


def images_in(folder: str | os.PathLike, limit: int = 0) -> list[Path]:
    """The folder's images (recursively, sorted; the first `limit` if given): at least 2, or one line."""
    if not Path(folder).is_dir():
        raise UserError(f"{folder}: no such folder")
    paths = list_images(folder, max_size=limit)
    if len(paths) < 2:
        raise UserError(f"{folder}: {len(paths)} image(s); FID and KID need at least 2 per set")
    return paths


def read_images(paths: Sequence[Path]):
    """Each file's pixels (uint8 or uint16, as stored), one at a time; an unreadable file is one line."""
    for p in paths:
        try:
            yield read_image(p)[0]
        except OSError as e:
            raise UserError(f"cannot read {p} ({e}); remove it or fix it") from None


def content_key(paths: Sequence[Path], weights_sha256: str) -> str:
    h = hashlib.sha256(f"{weights_sha256}:{EXTRACTOR_VERSION}:{len(paths)}".encode())
    for p in paths:
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def real_features(
    paths: Sequence[Path], net: InceptionV3, weights_sha256: str, cache: bool = True
) -> tuple[np.ndarray, bool]:
    """(features (N, 2048) float32, whether they came from the cache)."""
    if not cache:
        return inception_features(read_images(paths), net), False
    entry = cache_folder() / f"{content_key(paths, weights_sha256)}.npy"
    if entry.is_file():
        try:
            features = np.load(entry)
            if features.shape == (len(paths), 2048):
                return features, True
        except (OSError, ValueError):  # a damaged entry is recomputed and replaced
            pass
    features = inception_features(read_images(paths), net)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(entry, lambda tmp: np.save(tmp, features), suffix=".npy", durable=False)
    except OSError:  # a read-only or full cache costs time, never the result
        pass
    return features, False
