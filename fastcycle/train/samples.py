"""Sample grids written during training: CycleGAN (real | translated | reconstructed, both ways),
pix2pix (input | output | target), DCGAN (a fixed noise batch) and distillation (input | teacher |
student | difference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastcycle.data.folders import write_image
from fastcycle.data.transforms import to_uint8
from fastcycle.models import eval_mode


def _tile(x: torch.Tensor) -> torch.Tensor:
    """(C, h, w) float [-1, 1] -> (3, h, w) uint8: a grayscale image (C 1) shown as gray, so that
    1- and 3-channel domains share a row."""
    x = to_uint8(x)
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _write(rows: list[torch.Tensor], path: Path) -> np.ndarray:
    """Stack (3, h, W) uint8 rows into one PNG at `path`; returns the (H, W, 3) image written."""
    image = torch.cat(rows, dim=1).permute(1, 2, 0).cpu().numpy()
    write_image(image, path)
    return image


@torch.no_grad()
def save_cycle_grid(model, real_A: torch.Tensor, real_B: torch.Tensor, path: Path) -> np.ndarray:
    """One row per image pair: real_A, fake_B, rec_A, real_B, fake_A, rec_B (uint8 PNG at `path`)."""
    G_AB, G_BA = model.generator("AtoB"), model.generator("BtoA")
    with eval_mode(G_AB, G_BA), model.autocast():
        fake_B = G_AB(real_A)
        fake_A = G_BA(real_B)
        rec_A, rec_B = G_BA(fake_B), G_AB(fake_A)
    rows = []
    for i in range(min(len(real_A), len(real_B))):
        tiles = [real_A[i], fake_B[i], rec_A[i], real_B[i], fake_A[i], rec_B[i]]
        rows.append(torch.cat([_tile(t) for t in tiles], dim=2))  # (3, H, 6W)
    return _write(rows, path)


@torch.no_grad()
def save_paired_grid(model, real_A: torch.Tensor, real_B: torch.Tensor, path: Path) -> np.ndarray:
    """pix2pix: one row per pair, input | output | target."""
    G = model.generator()
    with eval_mode(G), model.autocast():
        fake_B = G(real_A)
    rows = [
        torch.cat([_tile(t) for t in (a, f, b)], dim=2)
        for a, f, b in zip(real_A, fake_B, real_B, strict=True)
    ]
    return _write(rows, path)


@torch.no_grad()
def save_noise_grid(model, z: torch.Tensor, path: Path, ncol: int = 8) -> np.ndarray:
    """DCGAN: the images of a fixed noise batch, `ncol` per row, so runs show progress on the same z."""
    G = model.generator()
    with eval_mode(G), model.autocast():
        images = [_tile(x) for x in G(z)]  # n x (3, 64, 64)
    n = len(images) // ncol * ncol or len(images)
    rows = [torch.cat(images[i : i + ncol], dim=2) for i in range(0, n, ncol)]
    return _write(rows, path)


DIFFERENCE_GAIN = 4  # the distillation grid's |teacher - student| column, brightened to show small errors


@torch.no_grad()
def save_distill_grid(model, x: torch.Tensor, path: Path) -> np.ndarray:
    """Distillation: one row per image, input | teacher | student | |teacher - student| x DIFFERENCE_GAIN
    (black where they agree)."""
    G = model.generator()
    with eval_mode(G), model.autocast():
        teacher, student = model.teacher(x).float(), G(x).float()
    difference = ((teacher - student).abs() * DIFFERENCE_GAIN - 1).clamp(-1, 1)  # 0 -> -1: black
    rows = [
        torch.cat([_tile(t) for t in tiles], dim=2)
        for tiles in zip(x, teacher, student, difference, strict=True)
    ]
    return _write(rows, path)
