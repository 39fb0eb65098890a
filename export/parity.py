"""Every export is checked against the PyTorch generator it came from, on random and real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastcycle.data.folders import list_images, load_image
from fastcycle.errors import UserError

# Max abs error on [-1, 1] outputs that an export may show against the fp32 PyTorch model:
# fp32 only reorders float sums (1e-4 is ~100x what a correct export shows); fp16 keeps 11 bits per
# value through ~20 layers; bf16 keeps 8.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2}


def parity_inputs(
    size: int, images_dir: str | Path | None, n_real: int = 4, nc: int = 3
) -> list[tuple[str, torch.Tensor]]:
    """(label, (N, nc, size, size) float [-1, 1]) batches: random noise, and real images when a folder
    is given (converted to nc channels as training converts them, resized to size x size, bicubic)."""
    g = torch.Generator().manual_seed(0)
    batches = [("random", torch.rand(2, nc, size, size, generator=g) * 2 - 1)]
    if images_dir is not None and Path(images_dir).is_dir():
        real = []
        for path in list_images(images_dir)[: 4 * n_real]:
            try:
                img = load_image(path, nc).resize((size, size), Image.Resampling.BICUBIC)
            except OSError:
                continue
            real.append(torch.from_numpy(np.array(img).reshape(size, size, nc)).permute(2, 0, 1))
            if len(real) == n_real:
                break
        if real:
            batches.append((f"{len(real)} real images", torch.stack(real).float() / 127.5 - 1))
    return batches


@torch.no_grad()
def check_parity(reference: torch.nn.Module, runner, inputs, dtype: str, label: str) -> str:
    """Run both on every batch; return one report line, or raise UserError over the tolerance."""
    reference = reference.cpu().eval()  # the fp32 CPU result is the reference, whatever the runner's device
    worst, total, count = 0.0, 0.0, 0
    for _, x in inputs:
        want = reference(x).float()
        got = runner(x.to(runner.device)).float().cpu()
        diff = (got - want).abs()
        worst, total, count = max(worst, diff.max().item()), total + diff.sum().item(), count + diff.numel()
    tol = TOLERANCE[dtype]
    line = (
        f"parity {label} vs PyTorch ({', '.join(name for name, _ in inputs)}): max abs {worst:.2e}, "
        f"mean abs {total / count:.2e} (tolerance {tol:.0e}, {dtype})"
    )
    if not worst <= tol:
        raise UserError(f"{line}: over the tolerance, the export is wrong; please report it")
    return line
