"""Images -> Inception pool3 features, in batches on the extractor's device, in exact float32.

FID is sensitive to the features' precision: TF32 (cuDNN's default for float32 convolutions on Ampere
and later GPUs) or bf16 autocast move features by ~1e-3 relative, enough to move an FID in its first
decimal, so the extractor runs with both turned off whatever the caller set. Images are 8-bit RGB, as
FID is defined: grayscale is repeated to three channels, alpha dropped, 16 bits rounded to 8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from fastcycle.quality.inception import SIZE, InceptionV3, resize_tf1

BATCH = 64  # images per extractor call: ~1.4 GB of activations in float32 at 299x299


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) uint8/uint16, C in 1..4 -> (H, W, 3) uint8."""
    x = np.asarray(image)
    if x.dtype == np.uint16:
        x = ((x.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(x * 255 / 65535)
    elif x.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {x.dtype}")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or not 1 <= x.shape[2] <= 4:
        raise ValueError(f"expected an (H, W[, C]) image with 1 to 4 channels, got shape {x.shape}")
    x = x[..., :1] if x.shape[2] == 2 else x[..., :3]  # gray + alpha -> gray; RGBA -> RGB
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """float32 as IEEE float32 on `device`: no TF32 in convolutions or matmuls, no autocast."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        saved = conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
        conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = "ieee", "ieee"
    else:
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False), torch.inference_mode():
            yield
    finally:
        if conv is not None and hasattr(conv, "fp32_precision"):
            conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
        else:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def inception_features(images: Iterable[np.ndarray], net: InceptionV3, batch: int = BATCH) -> np.ndarray:
    """(N, 2048) float32 features of uint8/uint16 images of any size (each resized on the device as
    the graph resizes it, then run `batch` at a time)."""
    device = next(net.buffers()).device
    out: list[np.ndarray] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        x = torch.cat(pending).contiguous(memory_format=torch.channels_last)  # the net's layout
        out.append(net(x).cpu().numpy())
        pending.clear()

    with exact_fp32(device):
        for image in images:
            x = torch.from_numpy(np.array(to_rgb8(image))).to(device).permute(2, 0, 1)[None].float()
            pending.append(x if x.shape[2:] == (SIZE, SIZE) else resize_tf1(x))
            if len(pending) == batch:
                flush()
        if pending:
            flush()
    return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)
