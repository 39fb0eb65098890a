"""FLOPs of one CycleGAN training iteration, counted, not estimated, and MFU from them.

`step_flops` replays the reference's sequence of network calls (four generator passes for the
cycle, two for identity, the discriminators on fakes for the generator loss, then on real and pooled
fake images for their own) on meta tensors under torch's FlopCounterMode: every conv, transposed conv
and matmul is counted from its real shapes, forward and backward, without allocating or computing
anything. The optimizer, norms and losses are elementwise and left out (under 1% of the total).
"""

from __future__ import annotations

import re

import torch
from torch.utils.flop_counter import FlopCounterMode

from fastcycle.config import TrainConfig
from fastcycle.models import build_discriminator, build_generator

# Dense bf16 tensor-core peaks (FLOP/s) that MFU is quoted against (docs/ARCHITECTURE.md), by the GPU
# kind that torch's device name contains: the one table that training's progress line and every
# benchmark read. H100 ~790 measured (SXM datasheet 989); the H200 has the same compute (769-798
# measured on one by the device tool's own check). Others: datasheet dense bf16.
PEAK_BF16 = {"H100": 790e12, "H200": 790e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def step_flops(cfg: TrainConfig) -> float:
    """FLOPs of one training iteration per image pair at cfg's crop size and networks."""
    m = cfg.model
    size = cfg.data.crop_size
    with torch.device("meta"):
        g = dict(ngf=m.ngf, norm=m.norm, dropout=m.dropout)
        G_AB, G_BA = build_generator(m.netG, **g), build_generator(m.netG, **g)
        D_A, D_B = (build_discriminator(m.netD, ndf=m.ndf, n_layers=m.n_layers_D, norm=m.norm) for _ in "AB")
        real_A, real_B = torch.empty(1, 3, size, size), torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        for D in (D_A, D_B):
            D.requires_grad_(False)  # the generator step does not compute D's weight gradients
        fake_B, fake_A = G_AB(real_A), G_BA(real_B)
        loss = G_BA(fake_B).mean() + G_AB(fake_A).mean() + D_B(fake_B).mean() + D_A(fake_A).mean()
        if cfg.loss.lambda_identity > 0:
            loss = loss + G_AB(real_B).mean() + G_BA(real_A).mean()
        loss.backward()
        for D in (D_A, D_B):
            D.requires_grad_(True)
        loss_D = sum(
            D(x).mean()
            for D, x in ((D_B, real_B), (D_B, fake_B.detach()), (D_A, real_A), (D_A, fake_A.detach()))
        )
        loss_D.backward()
    return float(counter.get_total_flops())


def peak_flops_of(gpu_name: str) -> float | None:
    """PEAK_BF16 of a device name ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"), or None.

    Matched on whole words of the name, so an L4 is not taken for an L40S nor an A100 for an A10."""
    words = set(re.split(r"[^A-Za-z0-9]+", gpu_name))
    return next((peak for kind, peak in PEAK_BF16.items() if kind in words), None)


def peak_flops(device: torch.device) -> float | None:
    """The bf16 peak MFU is quoted against, or None where there is none to quote (CPUs, unknown GPUs)."""
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device))
