"""Small synthetic datasets with a known structure, written as real image files, for the model families'
learning tests: pix2pix pairs with a fixed colour map, DCGAN discs, and labelled stripes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a smooth random colour field (a few Gaussian blobs)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for _ in range(4):
        cx, cy, r = rng.random(), rng.random(), 0.15 + 0.2 * rng.random()
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)[..., None] * rng.random(3)
    return (255 * img / max(img.max(), 1e-6)).astype(np.uint8)


def colour_map(a: np.ndarray) -> np.ndarray:
    """pix2pix's target: channels reversed and inverted (a fixed, learnable per-pixel map)."""
    return 255 - a[..., ::-1]


def write_pix2pix(root: Path, n: int, size: int, seed: int = 0, split: str = "train") -> Path:
    """<root>/<split>/<i>.png, each A | B side by side (the reference's aligned format)."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = _blobs(rng, size)
        Image.fromarray(np.concatenate([a, colour_map(a)], axis=1)).save(root / split / f"{i:03d}.png")
    return root


DISC, BACKGROUND = (230, 40, 30), (20, 40, 200)  # DCGAN toy set: a red disc on blue


def write_discs(folder: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        (cx, cy), r = rng.integers(16, size - 16, 2).tolist(), int(rng.integers(8, 14))
        img = np.empty((size, size, 3), np.uint8)
        img[:] = BACKGROUND
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = DISC
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def stripes(rng: np.random.Generator, size: int, vertical: bool, tint: np.ndarray) -> np.ndarray:
    period = int(rng.integers(4, 8))
    phase = rng.integers(0, period)
    wave = ((np.arange(size) + phase) // (period // 2)) % 2
    plane = np.tile(wave[None, :] if vertical else wave[:, None], (size, 1) if vertical else (1, size))
    img = 60 + 150 * plane[..., None] * tint[None, None, :]
    return (img + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)


def write_striped_domains(root: Path, n: int, size: int, labelled: float, seed: int = 0) -> tuple[Path, Path]:
    """trainA (reddish) and trainB (bluish) stripes; class = orientation. A `labelled` fraction of each
    domain is listed in labels_A.csv / labels_B.csv. Returns the two CSV paths."""
    rng = np.random.default_rng(seed)
    csvs = []
    for domain, tint in (("A", np.array([1.0, 0.4, 0.3])), ("B", np.array([0.3, 0.4, 1.0]))):
        folder = root / f"train{domain}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = ["filename,label"]
        for i in range(n):
            vertical = bool(i % 2)
            Image.fromarray(stripes(rng, size, vertical, tint)).save(folder / f"{i:03d}.png")
            if rng.random() < labelled:
                rows.append(f"{i:03d}.png,{'vertical' if vertical else 'horizontal'}")
        csv = root / f"labels_{domain}.csv"
        csv.write_text("\n".join(rows) + "\n")
        csvs.append(csv)
    return csvs[0], csvs[1]
