"""fastcycle's Triton kernels vs eager PyTorch vs torch.compile of the same reference op.

Shapes are the generator's at 256x256 input; dtype bf16, channels-last.

    pytest benchmarks/bench_kernels.py                      # on a GPU: 256x256 generator shapes, bf16
    pytest benchmarks/bench_kernels.py --benchmark-disable  # anywhere: each case once, as a smoke test

Each case records in extra_info its bytes or FLOPs, the achieved GB/s or TFLOP/s, and the fraction of
this GPU's measured copy bandwidth or bf16 matmul rate (benchmarks/conftest.py). Bytes are the op's
minimum traffic (read each input once, write each output once), the same count for every provider, so
GB/s compares useful work: a provider that makes extra passes shows as a lower fraction.
"""

import pytest
import torch

from benchmarks.conftest import DEVICE, SMOKE, compile_options, environment, rounds, synchronize
from fastcycle.kernels.instance_norm import instance_norm, instance_norm_reference
from fastcycle.kernels.reflect_conv import reflect_conv2d, reflect_conv2d_reference

DTYPE = torch.float32 if SMOKE else torch.bfloat16
BATCHES = [1] if SMOKE else [1, 4, 16]
PROVIDERS = ["eager", "compile", "triton"]
MODES = ["fwd", "fwd_bwd"]

# (name, (C, H, W) at 256x256 input, relu, residual): the generator's instance norms
NORM_CASES = [
    ("resblock_norm_relu", (256, 64, 64), True, False),
    ("resblock_norm_residual", (256, 64, 64), False, True),
    ("c7s1_norm_relu", (64, 256, 256), True, False),
]
# (name, (C_in, H, W), C_out, kernel, reflect): the generator's reflection-padded convs
CONV_CASES = [
    ("resblock_conv3x3", (256, 64, 64), 256, 3, 1),
    ("c7s1_first", (3, 256, 256), 64, 7, 3),
    ("c7s1_last", (64, 256, 256), 3, 7, 3),
]
SMOKE_CHW = (8, 12, 12)


def _fn(provider, op, reference):
    if provider == "triton":
        return op
    if provider == "compile":
        return torch.compile(reference, dynamic=False, **compile_options())
    return reference


def _run(benchmark, fn, inputs, mode):
    """Benchmark fn(*inputs) (and its backward), device-synchronised; returns median seconds or None."""
    grad = torch.randn_like(fn(*inputs)) if mode == "fwd_bwd" else None

    def step():
        if mode == "fwd":
            with torch.no_grad():
                fn(*inputs)
        else:
            fn(*inputs).backward(grad)
        synchronize()

    for _ in range(3):  # compile, autotune, allocator warm-up outside the timed rounds
        step()
    benchmark.pedantic(step, rounds=rounds(50), iterations=1)
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats else None


def _record(benchmark, ceilings, seconds, *, bytes_=None, flops=None, **info):
    info |= {"dtype": str(DTYPE).removeprefix("torch."), "env": environment()}
    if bytes_ is not None:
        info["bytes"] = bytes_
    if flops is not None:
        info["flops"] = flops
    if seconds:
        if bytes_ is not None:
            info["gb_per_s"] = bytes_ / seconds / 1e9
            info["fraction_of_dram"] = bytes_ / seconds / ceilings["dram_bytes_per_s"]
        if flops is not None:
            info["tflop_per_s"] = flops / seconds / 1e12
            info["fraction_of_bf16_matmul"] = flops / seconds / ceilings["bf16_flop_per_s"]
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", NORM_CASES, ids=[c[0] for c in NORM_CASES])
def test_instance_norm(benchmark, ceilings, case, batch, provider, mode):
    name, chw, relu, residual = case
    shape = (batch, *(SMOKE_CHW if SMOKE else chw))
    x = torch.randn(shape, device=DEVICE, dtype=DTYPE).to(memory_format=torch.channels_last)
    r = torch.randn_like(x) if residual else None
    x.requires_grad_(mode == "fwd_bwd")
    op = _fn(provider, instance_norm, instance_norm_reference)
    seconds = _run(benchmark, lambda x, r: op(x, residual=r, relu=relu), (x, r), mode)
    # Minimum traffic: fwd reads x (and r) and writes y; bwd reads x and dy and writes dx
    # (the residual's gradient is dy itself).
    tensors = 2 + residual + (3 if mode == "fwd_bwd" else 0)
    bytes_ = tensors * x.numel() * x.element_size()
    _record(benchmark, ceilings, seconds, bytes_=bytes_, case=name, shape=shape, provider=provider, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_reflect_conv(benchmark, ceilings, case, batch, provider, mode):
    name, (c_in, h, w), c_out, k, p = case
    if SMOKE:
        (c_in, h, w), c_out = SMOKE_CHW, SMOKE_CHW[0]
    x = torch.randn(batch, c_in, h, w, device=DEVICE, dtype=DTYPE).to(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, k, k, device=DEVICE, dtype=DTYPE) / (c_in * k * k) ** 0.5
    bias = torch.zeros(c_out, device=DEVICE, dtype=DTYPE)
    for t in (x, weight, bias):
        t.requires_grad_(mode == "fwd_bwd")
    op = _fn(provider, reflect_conv2d, reflect_conv2d_reference)
    seconds = _run(benchmark, lambda x, w, b: op(x, w, b, padding=p), (x, weight, bias), mode)
    # Forward: 2 FLOPs per multiply-add; backward: the input and weight gradients, twice that again.
    flops = 2 * batch * h * w * c_out * c_in * k * k * (3 if mode == "fwd_bwd" else 1)
    _record(
        benchmark,
        ceilings,
        seconds,
        flops=flops,
        case=name,
        shape=(batch, c_in, h, w),
        provider=provider,
        mode=mode,
    )
