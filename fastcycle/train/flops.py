"""FLOPs of one CycleGAN training iteration, counted, not estimated, and MFU from them.

`step_flops` builds the CycleGAN family on the meta device and runs one real `train_step` on meta
tensors under torch's FlopCounterMode: the step's own network calls (the generator passes for cycle
and identity, the discriminators on the fakes for the generator loss, then on real and pooled fake
images for their own), every conv, transposed conv and matmul counted from its real shapes, forward
and backward, without allocating or computing anything. What FlopCounterMode has no formula for is
left out: the optimizer, the image pool, norms and losses are elementwise (under 1% of the total).
So are the WGAN-GP penalty's pass (FlopCounterMode cannot follow its autograd.grad: with wgangp the
count is a lower bound) and --aux-classifier's class heads (one small linear layer each).
"""

from __future__ import annotations

import copy
import re

import torch
from torch.utils.flop_counter import FlopCounterMode

from fastcycle.config import TrainConfig
from fastcycle.runtime import resolve_precision
from fastcycle.train.cyclegan import CycleGAN
from fastcycle.train.env import ModelEnv

# Dense bf16 tensor-core peaks (FLOP/s) that MFU is quoted against (docs/ARCHITECTURE.md), by the GPU
# kind that torch's device name contains: the one table that training's progress line and every
# benchmark read. H100 ~790 measured (SXM datasheet 989); the H200 has the same compute (769-798
# measured on one by the device tool's own check). Others: datasheet dense bf16.
PEAK_BF16 = {"H100": 790e12, "H200": 790e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def step_flops(cfg: TrainConfig) -> float:
    """FLOPs of one training iteration per image pair at cfg's crop size and networks."""
    counted = copy.deepcopy(cfg)  # the same networks and step, eager and fp32, nothing read from disk
    counted.runtime.compile, counted.run.init_weights, counted.optim.ema_decay = False, None, 0.0
    counted.model.aux_classifier = False
    if counted.loss.gan_mode == "wgangp":
        counted.loss.gan_mode = "lsgan"
    meta, size = torch.device("meta"), cfg.data.crop_size
    # The family seeds torch's generators as it builds; the run's RNG streams must not notice.
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices), meta:  # every module and tensor made here is meta
        model = CycleGAN(counted, ModelEnv(meta, resolve_precision(False, "auto", meta)))
        for opt in (model.opt_G, model.opt_D):  # fused Adam has no meta kernel; its update is not counted
            opt.step = lambda: None
        m = cfg.model
        real_A, real_B = torch.empty(1, m.input_nc, size, size), torch.empty(1, m.output_nc, size, size)
        with FlopCounterMode(display=False) as counter:
            model.train_step(real_A, real_B)
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
