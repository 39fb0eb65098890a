"""The reference's preprocessing policies (`--preprocess`), split into two halves every loader shares.

1. `prepared_size` / `prepare`: the deterministic resizes of one image (the policy's resize, the
   reference's rounding to a multiple of 4 for policies without a crop). Sizes are computed in integers
   on the host, so the torch, gpu-cache and DALI loaders resize every file to exactly the same size.
2. `crop_offset` / `crop_flip`: the random crop and flip, driven by uniforms in [0, 1) from the epoch
   plan (fastcycle.data.plan), so a (seed, epoch, position) key reproduces them in any loader.

Normalisation to [-1, 1] happens on the training device, not here: uint8 batches are 4x smaller to
pin and copy than float32 ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from fastcycle.choices import CROPPING

BICUBIC = Image.Resampling.BICUBIC


def _round4(w: int, h: int) -> tuple[int, int]:
    # The reference's __make_power_2(base=4): Python's round (half to even), at least 4.
    return max(4, round(w / 4) * 4), max(4, round(h / 4) * 4)


def resize_size(policy: str, w: int, h: int, load_size: int, crop_size: int) -> tuple[int, int]:
    """(width, height) after the policy's resize, before any crop."""
    if policy == "resize_and_crop":
        return load_size, load_size
    if policy in ("scale_width", "scale_width_and_crop"):
        if w == load_size and h >= crop_size:
            return w, h
        return load_size, int(max(load_size * h / w, crop_size))
    if policy == "crop" and (w < crop_size or h < crop_size):
        # Smaller than the crop: scale up, keeping the aspect (the reference would crop past the edge).
        s = crop_size / min(w, h)
        return max(crop_size, round(w * s)), max(crop_size, round(h * s))
    return w, h


def prepared_size(policy: str, w: int, h: int, load_size: int, crop_size: int) -> tuple[int, int]:
    """(width, height) of `prepare`'s output: what the random crop (or, without one, the batch) sees."""
    w, h = resize_size(policy, w, h, load_size, crop_size)
    # With a crop, the multiple-of-4 rounding applies to the crop, which validate() makes one already.
    return (w, h) if policy in CROPPING else _round4(w, h)


def prepare(img: Image.Image, policy: str, load_size: int, crop_size: int) -> Image.Image:
    """The deterministic resizes of one RGB or L image, as the reference does them (PIL bicubic)."""
    size = resize_size(policy, *img.size, load_size, crop_size)
    if size != img.size:
        img = img.resize(size, BICUBIC)
    if policy not in CROPPING:
        size = _round4(*img.size)  # a second resize, as in the reference (scale_width, then power-of-4)
        if size != img.size:
            img = img.resize(size, BICUBIC)
    return img


def crop_offset(u: float | np.ndarray, extent: int | np.ndarray, crop_size: int):
    """Uniform integer offset in [0, extent - crop_size] from a uniform u in [0, 1)."""
    return np.floor(np.asarray(u) * (np.asarray(extent) - crop_size + 1)).astype(np.int64)


def crop_flip(arr: np.ndarray, crop_size: int | None, u: Sequence[float], flip: bool) -> torch.Tensor:
    """(H, W, C) or (H, W) uint8 -> (C, h, w) uint8: crop at offsets from u[0], u[1], mirror when
    u[2] < 0.5."""
    if arr.ndim == 2:  # a mode "L" image: one channel
        arr = arr[..., None]
    if crop_size is not None:
        h, w = arr.shape[:2]
        x, y = int(crop_offset(u[0], w, crop_size)), int(crop_offset(u[1], h, crop_size))
        arr = arr[y : y + crop_size, x : x + crop_size]
    if flip and u[2] < 0.5:
        arr = arr[:, ::-1]
    # A copy unless already one: (C, h, w) contiguous and writable. One channel transposes to a
    # contiguous view of PIL's read-only buffer, which torch must not wrap.
    return torch.from_numpy(np.require(arr.transpose(2, 0, 1), requirements=["C", "W"]))


def preprocess(
    img: Image.Image, policy: str, load_size: int, crop_size: int, flip: bool, u: Sequence[float]
) -> torch.Tensor:
    """Resize/crop/flip one RGB or L image as the reference does; returns (3 or 1, H, W) uint8."""
    arr = np.asarray(prepare(img, policy, load_size, crop_size), dtype=np.uint8)  # (H, W, 3) or (H, W)
    return crop_flip(arr, crop_size if policy in CROPPING else None, u, flip)


def to_model_range(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Pixels [0, 2**bits - 1] (uint8 [0, 255] by default) -> float [-1, 1], the generators' input and
    output range."""
    return x.float().div_((2**bits - 1) / 2).sub_(1.0)


def to_pixels(x: torch.Tensor, bits: int) -> torch.Tensor:
    """float [-1, 1] -> pixels [0, 2**bits - 1], rounding to nearest: uint8 for 8 bits, int32 for 16
    (torch's uint16 has almost no ops; the caller's NumPy array takes them as uint16)."""
    y = ((x.float().clamp(-1, 1) + 1.0) * ((2**bits - 1) / 2)).round_()
    return y.to(torch.uint8 if bits == 8 else torch.int32)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding to nearest."""
    return to_pixels(x, 8)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (N, C, H, W) on the bottom and right up to multiples of `multiple` (4 for the ResNets, 2**downs
    for the U-Nets), so a generator takes any image without resampling; crop its output back to H, W.
    Reflection where the image is larger than the padding (no seam), else edge replication."""
    h, w = x.shape[2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = torch.nn.functional.pad(
            x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate"
        )
    return x.contiguous()
