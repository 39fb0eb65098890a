"""The reference's preprocessing policies (`--preprocess`), producing uint8 CHW tensors.

Normalisation to [-1, 1] happens on the training device, not here: uint8 batches are 4x smaller to
pin and copy than float32 ones.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

BICUBIC = Image.Resampling.BICUBIC


def _scale_width(img: Image.Image, target_width: int, crop_size: int) -> Image.Image:
    ow, oh = img.size
    if ow == target_width and oh >= crop_size:
        return img
    h = int(max(target_width * oh / ow, crop_size))
    return img.resize((target_width, h), BICUBIC)


def _make_multiple_of(img: Image.Image, base: int = 4) -> Image.Image:
    ow, oh = img.size
    w, h = max(base, round(ow / base) * base), max(base, round(oh / base) * base)
    return img if (w, h) == (ow, oh) else img.resize((w, h), BICUBIC)


def preprocess(
    img: Image.Image,
    policy: str,
    load_size: int,
    crop_size: int,
    flip: bool,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Resize/crop/flip one RGB image as the reference does; returns (3, H, W) uint8.

    Random choices (crop offset, flip) come from `rng`, so a (seed, epoch, index) key reproduces them.
    """
    if policy == "resize_and_crop":
        img = img.resize((load_size, load_size), BICUBIC)
    elif policy in ("scale_width", "scale_width_and_crop"):
        img = _scale_width(img, load_size, crop_size)
    if policy in ("resize_and_crop", "crop", "scale_width_and_crop"):
        w, h = img.size
        if w < crop_size or h < crop_size:  # smaller than the crop: scale up, keeping the aspect
            s = crop_size / min(w, h)
            img = img.resize((max(crop_size, round(w * s)), max(crop_size, round(h * s))), BICUBIC)
            w, h = img.size
        x = int(rng.integers(0, w - crop_size + 1))
        y = int(rng.integers(0, h - crop_size + 1))
        img = img.crop((x, y, x + crop_size, y + crop_size))
    img = _make_multiple_of(img, 4)  # the reference's __make_power_2(base=4), for every policy
    arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    if flip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # (3, H, W)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the generators' input and output range."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding to nearest."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)
