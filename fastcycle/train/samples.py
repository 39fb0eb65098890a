"""Sample grids: real | translated | reconstructed, for both directions, written as one PNG."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from fastcycle.data.folders import save_image
from fastcycle.data.transforms import to_uint8


@contextmanager
def eval_mode(*nets: nn.Module):
    was = [n.training for n in nets]
    for n in nets:
        n.eval()
    try:
        yield
    finally:
        for n, w in zip(nets, was, strict=True):
            n.train(w)


@torch.no_grad()
def save_sample_grid(model, real_A: torch.Tensor, real_B: torch.Tensor, path: Path) -> None:
    """One row per image pair: real_A, fake_B, rec_A, real_B, fake_A, rec_B (uint8 PNG at `path`)."""
    G_AB, G_BA = model.generator("AtoB"), model.generator("BtoA")
    with eval_mode(G_AB, G_BA), model.autocast():
        fake_B = G_AB(real_A)
        fake_A = G_BA(real_B)
        rec_A, rec_B = G_BA(fake_B), G_AB(fake_A)
    rows = []
    for i in range(min(len(real_A), len(real_B))):
        tiles = [real_A[i], fake_B[i], rec_A[i], real_B[i], fake_A[i], rec_B[i]]
        rows.append(torch.cat([to_uint8(t) for t in tiles], dim=2))  # (3, H, 6W)
    grid = torch.cat(rows, dim=1)  # (3, nH, 6W)
    save_image(grid.permute(1, 2, 0).cpu().numpy(), path)
