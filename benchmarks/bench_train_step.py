"""One full CycleGAN iteration (both generators, both discriminators, pools, both optimizer steps),
and one iteration of each other model family (test_family_step: pix2pix, DCGAN, CycleGAN + WGAN-GP).

    pytest benchmarks/bench_train_step.py                      # on a GPU: resnet_9blocks at 256x256
    pytest benchmarks/bench_train_step.py --benchmark-disable  # anywhere: a tiny CycleGAN, each case once

Cases, each adding one thing to the one before, on synthetic data already on the device:

    reference       the reference implementation's step: its exact sequence of network calls and
                    backward passes, eager fp32, batch 1, NCHW, torch.optim.Adam with its defaults,
                    cudnn.benchmark on (the reference sets it for every --preprocess but scale_width)
    fastcycle_fp32  fastcycle's step: real+identity and real+fake calls batched, fused Adam, no sync
    bf16            + bf16 autocast
    channels_last   + channels-last memory format
    compile         + torch.compile of each network
    triton          + fastcycle's fused Triton kernels in the generators
    cudagraphs      + CUDA graphs (compile mode reduce-overhead: each network's graph replayed)
    best-b{1,4,8,16} the best configuration at batch 1, 4, 8, 16

Every case reports pairs/s, MFU (FLOPs counted by fastcycle.train.flops.step_flops, over the dense
bf16 peak of the GPU it ran on from fastcycle.train.flops.PEAK_BF16; null where that peak is unknown,
a CPU included), the fraction of this GPU's measured bf16 matmul rate, peak memory, and its
speed-up over `reference` measured in the same run.
"""

import copy
import functools
import itertools
from types import SimpleNamespace

import pytest
import torch

from benchmarks.conftest import DEVICE, SMOKE, compile_options, environment, rounds, synchronize
from fastcycle.config import apply_overrides
from fastcycle.losses import gan_loss, l1
from fastcycle.pool import ImagePool
from fastcycle.presets import cyclegan
from fastcycle.runtime import resolve_precision
from fastcycle.train import CycleGAN
from fastcycle.train.env import ModelEnv
from fastcycle.train.flops import peak_flops, step_flops

SIZE = 32 if SMOKE else 256
STEPS = 1 if SMOKE else 20  # iterations per timed round
# (id, batch, amp, channels_last, compile mode or None, kernels); the compile cases use the "eager"
# backend on a CPU: a smoke test of the plumbing, since Inductor compiling four networks takes minutes.
CASES = [
    ("reference", 1, False, False, None, "torch"),
    ("fastcycle_fp32", 1, False, False, None, "torch"),
    ("bf16", 1, True, False, None, "torch"),
    ("channels_last", 1, True, True, None, "torch"),
    ("compile", 1, True, True, "default", "torch"),
    ("triton", 1, True, True, "default", "triton"),
    ("cudagraphs", 1, True, True, "reduce-overhead", "triton"),
    *[(f"best-b{b}", b, True, True, "reduce-overhead", "triton") for b in (1, 4, 8, 16)],
]
PEAK = peak_flops(DEVICE)  # FLOP/s MFU is quoted against; None (MFU null) where unknown
_reference_pairs_per_s = []  # set by the reference case, which runs first


def _config(batch: int, amp: bool, channels_last: bool):
    small = {"netG": "resnet_6blocks", "ngf": 4, "ndf": 4, "n_layers_D": 2} if SMOKE else {}
    overrides = {"batch_size": batch, "crop_size": SIZE, "amp": amp, "channels_last": channels_last}
    return apply_overrides(cyclegan(), small | overrides)


class ReferenceStep:
    """The reference's CycleGANModel.optimize_parameters, call for call (fastcycle's names: G_AB is
    its netG_A, D_B its netD_A). The networks are fastcycle's, which are the reference's modules."""

    def __init__(self, model: CycleGAN):
        self.m, lo = SimpleNamespace(**model.nets), model.cfg.loss  # the networks by name: m.G_AB
        self.lo = lo
        adam = dict(lr=model.cfg.optim.lr, betas=(model.cfg.optim.beta1, 0.999))  # default implementation
        m = self.m
        self.opt_G = torch.optim.Adam(itertools.chain(m.G_AB.parameters(), m.G_BA.parameters()), **adam)
        self.opt_D = torch.optim.Adam(itertools.chain(m.D_A.parameters(), m.D_B.parameters()), **adam)
        self.pool_A, self.pool_B = ImagePool(lo.pool_size, 1), ImagePool(lo.pool_size, 2)

    def _backward_D(self, D, real, fake):
        loss = (
            gan_loss(D(real), True, self.lo.gan_mode) + gan_loss(D(fake.detach()), False, self.lo.gan_mode)
        ) * 0.5
        loss.backward()

    def train_step(self, real_A, real_B):
        m, lo = self.m, self.lo
        fake_B = m.G_AB(real_A)
        rec_A = m.G_BA(fake_B)
        fake_A = m.G_BA(real_B)
        rec_B = m.G_AB(fake_A)
        m.D_A.requires_grad_(False)
        m.D_B.requires_grad_(False)
        self.opt_G.zero_grad()
        idt_A = m.G_AB(real_B)
        idt_B = m.G_BA(real_A)
        loss_G = (
            gan_loss(m.D_B(fake_B), True, lo.gan_mode)
            + gan_loss(m.D_A(fake_A), True, lo.gan_mode)
            + l1(rec_A, real_A) * lo.lambda_A
            + l1(rec_B, real_B) * lo.lambda_B
            + l1(idt_A, real_B) * lo.lambda_B * lo.lambda_identity
            + l1(idt_B, real_A) * lo.lambda_A * lo.lambda_identity
        )
        loss_G.backward()
        self.opt_G.step()
        m.D_A.requires_grad_(True)
        m.D_B.requires_grad_(True)
        self.opt_D.zero_grad()
        self._backward_D(m.D_B, real_B, self.pool_B.query(fake_B))
        self._backward_D(m.D_A, real_A, self.pool_A.query(fake_A))
        self.opt_D.step()


@functools.cache
def _flops() -> float:
    """Per-pair FLOPs, counted once: every case trains the same networks at the same size (batch,
    precision and memory layout do not change the count), and counting takes seconds."""
    return step_flops(_config(1, False, False))


def build_case(case):
    """(the model or ReferenceStep of a CASES entry, its config), on DEVICE, compiled if the case says so."""
    name, batch, amp, channels_last, mode, kernels = case
    cfg = _config(batch, amp, channels_last)
    model = CycleGAN(cfg, ModelEnv(DEVICE, resolve_precision(amp, "auto", DEVICE), kernels))
    if mode is not None:
        for net in model.nets.values():
            net.compile(dynamic=False, **compile_options(mode=mode))
    return (ReferenceStep(model) if name == "reference" else model), cfg


@pytest.mark.parametrize("name", [c[0] for c in CASES])  # a plain string: the results file's params
def test_train_step(benchmark, ceilings, name):
    case = next(c for c in CASES if c[0] == name)
    batch = case[1]
    if name.startswith(("cudagraphs", "best")) and DEVICE.type != "cuda":
        pytest.skip("CUDA graphs need a GPU")
    torch.backends.cudnn.benchmark = True  # both fastcycle and the reference turn it on
    model, cfg = build_case(case)
    memory_format = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
    real_A, real_B = (
        (torch.rand(batch, 3, SIZE, SIZE, device=DEVICE) * 2 - 1).contiguous(memory_format=memory_format)
        for _ in range(2)
    )

    def steps():
        for _ in range(STEPS):
            model.train_step(real_A, real_B)
        synchronize()

    if not SMOKE:  # a smoke run's one round may include these: it times nothing worth keeping
        steps()  # cuDNN autotuning, compilation, CUDA-graph capture, allocator warm-up
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(steps, rounds=rounds(10), iterations=1)
    flops = _flops()
    info = {"case": name, "batch": batch, "size": SIZE, "flops_per_pair": flops, "env": environment()}
    info |= {"amp": cfg.runtime.amp, "channels_last": cfg.runtime.channels_last, "kernels": case[5]}
    info["compile_mode"] = case[4]
    if DEVICE.type == "cuda":
        info["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    stats = getattr(benchmark, "stats", None)
    if stats:
        pairs_per_s = batch * STEPS / stats.stats.median
        info["pairs_per_s"] = pairs_per_s
        info["mfu"] = pairs_per_s * flops / PEAK if PEAK else None
        info["fraction_of_bf16_matmul"] = pairs_per_s * flops / ceilings["bf16_flop_per_s"]
        if name == "reference":
            _reference_pairs_per_s[:] = [pairs_per_s]
        elif _reference_pairs_per_s:
            info["speedup_vs_reference"] = pairs_per_s / _reference_pairs_per_s[0]
    benchmark.extra_info.update(info)


# The other model families on the same engine (bf16, channels-last, fused Adam; no compile, so the
# numbers are the eager baseline a later speed push starts from): (id, preset, batch, size, overrides).
FAMILY_CASES = [
    ("pix2pix_unet256_b1", "pix2pix", 1, 256, {}),
    ("pix2pix_unet256_b16", "pix2pix", 16, 256, {}),
    ("dcgan_b128", "dcgan", 128, 64, {}),
    ("cyclegan_wgangp_b1", "cyclegan", 1, 256, {"gan_mode": "wgangp"}),
]


@pytest.mark.parametrize("name", [c[0] for c in FAMILY_CASES])
def test_family_step(benchmark, name):
    from torch.utils.flop_counter import FlopCounterMode

    from fastcycle.data.contract import Batch
    from fastcycle.presets import PRESETS
    from fastcycle.train.families import build_model

    _, preset, batch, size, overrides = next(c for c in FAMILY_CASES if c[0] == name)
    small = {"ngf": 4, "ndf": 4} if SMOKE else {}
    if SMOKE and preset == "pix2pix":
        small |= {"netG": "unet_128"}  # the smallest U-Net; unet_256 needs 256x256 crops
    if SMOKE and preset == "cyclegan":
        small |= {"netG": "resnet_6blocks", "n_layers_D": 2}
    batch, size = (
        (2, 128 if preset == "pix2pix" else 64 if preset == "dcgan" else 32) if SMOKE else (batch, size)
    )
    amp = {"amp": True, "channels_last": True, "batch_size": batch, "crop_size": size, "load_size": size}
    cfg = apply_overrides(PRESETS[preset](), small | overrides | amp)
    torch.backends.cudnn.benchmark = True
    model = build_model(cfg, ModelEnv(DEVICE, resolve_precision(True, "auto", DEVICE)))
    images = [
        (torch.rand(batch, 3, size, size, device=DEVICE) * 2 - 1).contiguous(
            memory_format=torch.channels_last
        )
        for _ in range(2)
    ]
    index = torch.zeros(batch, dtype=torch.long, device=DEVICE)
    data = Batch(images[0], None if preset == "dcgan" else images[1], [], index, index)
    # One real step, counted. FlopCounterMode's module hooks cannot follow the penalty's autograd.grad,
    # so WGAN-GP is counted without its penalty pass (MFU is then a lower bound).
    counted = model
    if cfg.loss.gan_mode == "wgangp":
        plain = apply_overrides(copy.deepcopy(cfg), {"gan_mode": "lsgan"})  # in place: a copy
        counted = build_model(plain, model.env)
    with FlopCounterMode(display=False) as counter:
        counted.step(data)
    flops = counter.get_total_flops() / batch
    del counted

    def steps():
        for _ in range(STEPS):
            model.step(data)
        synchronize()

    steps()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(steps, rounds=rounds(10), iterations=1)
    info = {"case": name, "model": cfg.model.model, "netG": cfg.model.netG, "batch": batch, "size": size}
    info |= {"flops_per_pair" if preset != "dcgan" else "flops_per_image": flops, "env": environment()}
    if DEVICE.type == "cuda":
        info["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    stats = getattr(benchmark, "stats", None)
    if stats:
        rate = batch * STEPS / stats.stats.median
        key = "images_per_s" if preset == "dcgan" else "pairs_per_s"  # DCGAN trains on single images
        info[key] = rate
        info["mfu"] = rate * flops / PEAK if PEAK else None
    benchmark.extra_info.update(info)
