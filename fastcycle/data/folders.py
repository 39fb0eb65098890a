"""Image folders: listing, checking, and decoding one file to RGB."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from fastcycle.atomic import write_atomic

# PIL only warns between MAX_IMAGE_PIXELS and twice that; check_pixels refuses those files instead.
# (warnings.catch_warnings is not thread-safe, and decoding runs in threads.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_images(folder: str | os.PathLike, max_size: int = 0) -> list[Path]:
    """All image files under `folder` (recursively), sorted so that runs are reproducible."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    return files[:max_size] if max_size else files


def load_rgb(path: Path) -> Image.Image:
    """Decode to 8-bit RGB (grayscale, palette, RGBA and CMYK are converted). Raises OSError if unreadable."""
    try:
        with Image.open(path) as img:
            check_pixels(img, path)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit PNGs: scale to 8 bits rather than clip (PIL's convert would saturate).
                arr = np.asarray(img, dtype=np.float32) / (65535.0 if "16" in img.mode else 2**31)
                return Image.fromarray((arr * 255 + 0.5).clip(0, 255).astype(np.uint8)).convert("RGB")
            return img.convert("RGB")
    except (Image.DecompressionBombError, ValueError) as e:
        raise OSError(f"{path}: {e}") from e


def check_pixels(img: Image.Image, path: Path) -> None:
    """A decompression-bomb-sized file is not a training image: refuse it before decoding."""
    w, h = img.size
    if w * h > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{w}x{h} pixels is over the {Image.MAX_IMAGE_PIXELS:,}-pixel limit"
        )


def save_image(arr: np.ndarray, path: Path) -> None:
    """Write an (H, W, 3) uint8 image atomically: a temporary file renamed over `path` once complete."""
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    write_atomic(path, lambda tmp: Image.fromarray(arr).save(tmp, format=fmt), durable=False)
