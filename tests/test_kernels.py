"""fastcycle's Triton kernels against their torch references: outputs and every gradient.

On a CPU they run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 first), with the
GPU's tile shapes; on a GPU, compiled. Each comparison shares one upstream gradient between the kernel
and the reference.
"""

import pytest
import torch

from fastcycle.kernels import host
from fastcycle.kernels.instance_norm import instance_norm, instance_norm_reference
from fastcycle.kernels.reflect_conv import reflect_conv2d, reflect_conv2d_reference
from tests.conftest import DEVICE

# fp32: same formulas, only the summation order differs (chunked Welford vs torch's reduction).
FP32 = dict(atol=2e-5, rtol=1e-4)
# bf16: both sides round an fp32 result once to bf16 (8-bit significand): a couple of ulps apart at most.
BF16 = dict(atol=2e-2, rtol=1.6e-2)
# One rounding of an fp32 value to bf16: relative 2^-8 with a GPU's round-to-nearest, 2^-7 under the CPU
# interpreter, which truncates (its stores drop the low 16 bits).
BF16_ROUNDING = 2**-8 if DEVICE.type == "cuda" else 2**-7


@pytest.fixture(autouse=True)
def gpu_tiles(monkeypatch):
    """Run the tile shapes a GPU runs, not the interpreter's few large tiles."""
    monkeypatch.setattr(host, "FEW_LARGE_TILES", False)


def _grads(fn, inputs, grad_out, **kw):
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves, **kw)
    y.backward(grad_out)
    return y.detach(), [None if t is None else t.grad for t in leaves]


def _compare(fn, ref, inputs, tol, **kw):
    """Output and all input gradients of fn and ref under one shared upstream gradient."""
    y_ref = ref(*inputs, **{k: v for k, v in kw.items() if k != "split"})
    grad_out = torch.randn(y_ref.shape, device=y_ref.device, generator=torch.Generator(y_ref.device))
    grad_out = grad_out.to(y_ref.dtype)
    y, grads = _grads(fn, inputs, grad_out, **kw)
    y0, grads0 = _grads(ref, inputs, grad_out, **{k: v for k, v in kw.items() if k != "split"})
    torch.testing.assert_close(y.float(), y0.float(), **tol)
    for g, g0 in zip(grads, grads0, strict=True):
        if g0 is not None:
            torch.testing.assert_close(g.float(), g0.float(), **tol)
    return y


SHAPES = [(1, 3, 37, 53), (2, 64, 16, 16), (2, 5, 9, 11), (3, 7, 1, 13)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
# split=3 cuts each plane into chunks whose statistics are merged; None is the GPU's heuristic.
@pytest.mark.parametrize(
    "affine,relu,residual,split",
    [(False, False, False, None), (False, True, False, 3), (True, True, True, None), (True, False, True, 3)],
)
def test_instance_norm_matches_torch(shape, channels_last, affine, relu, residual, split):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3 + 2).to(DEVICE)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    C = shape[1]
    w = torch.randn(C, generator=g).to(DEVICE) if affine else None
    b = torch.randn(C, generator=g).to(DEVICE) if affine else None
    r = torch.randn(shape, generator=g).to(DEVICE) if residual else None
    y = _compare(instance_norm, instance_norm_reference, [x, w, b, r], FP32, relu=relu, split=split)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_instance_norm_bf16(channels_last):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, 13, 17, generator=g).to(DEVICE, torch.bfloat16)
    r = torch.randn(2, 24, 13, 17, generator=g).to(DEVICE, torch.bfloat16)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = _compare(instance_norm, instance_norm_reference, [x, None, None, r], BF16, relu=True, split=2)
    assert y.dtype == torch.bfloat16


def test_instance_norm_statistics_survive_a_large_mean():
    # var = E[x^2] - E[x]^2 in fp32 loses everything at mean 1e3, std 1 (1e6 +- 1 in 24 bits); the
    # chunked Welford merge must match a float64 computation to fp32 precision.
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(2, 4, 33, 31, generator=g, dtype=torch.float64) + 1e3).to(DEVICE)
    expected = instance_norm_reference(x)  # float64 end to end
    got = instance_norm(x.float(), split=4).double()
    torch.testing.assert_close(got, expected, atol=5e-4, rtol=0)  # fp32 rounding of x at 1e3: 6e-5


def test_instance_norm_split_does_not_change_the_result():
    x = torch.randn(1, 8, 40, 40, device=DEVICE)
    whole = instance_norm(x, relu=True, split=1)
    for split in (2, 5, 64):
        torch.testing.assert_close(instance_norm(x, relu=True, split=split), whole, **FP32)


def test_instance_norm_rejects_bad_arguments():
    x = torch.randn(1, 2, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match=r"expects \(N, C, H, W\)"):
        instance_norm(x[0])
    with pytest.raises(ValueError, match="both weight and bias"):
        instance_norm(x, weight=torch.ones(2, device=DEVICE))
    with pytest.raises(ValueError, match="residual shape"):
        instance_norm(x, residual=x[:, :1])


CONV_CASES = [  # (N, C_in, H, W, C_out, kernel, reflect, stride): the generator's convs at odd sizes
    (1, 3, 37, 53, 8, 7, 3, 1),  # the first c7s1 layer on 3 channels: K tiles span kernel taps
    (2, 64, 16, 16, 64, 3, 1, 1),  # a residual block's conv
    (2, 16, 9, 11, 3, 7, 3, 1),  # the last c7s1 layer, 3 output channels
    (1, 5, 10, 13, 4, 3, 1, 2),  # strided
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_reflect_conv_matches_pad_then_conv(case, channels_last, bias):
    N, C_in, H, W, C_out, k, p, stride = case
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, C_in, H, W, generator=g).to(DEVICE)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(C_out, C_in, k, k, generator=g) / (C_in * k * k) ** 0.5).to(DEVICE)
    b = torch.randn(C_out, generator=g).to(DEVICE) if bias else None
    y = _compare(reflect_conv2d, reflect_conv2d_reference, [x, w, b], FP32, padding=p, stride=stride)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_reflect_conv_bf16():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 32, 12, 10, generator=g).to(DEVICE, torch.bfloat16)
    x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(16, 32, 3, 3, generator=g) / 17).to(DEVICE, torch.bfloat16)
    b = torch.randn(16, generator=g).to(DEVICE, torch.bfloat16)
    y = reflect_conv2d(x, w, b)
    # The reference in fp32 on the same bf16 values: the kernel's only error is rounding its fp32
    # accumulator to bf16 once, so the bound is relative to each output.
    expected = reflect_conv2d_reference(x.float(), w.float(), b.float())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, atol=1e-6, rtol=BF16_ROUNDING)
    # Gradients: the backward is cuDNN's/aten's own, on the bf16 tensors.
    _compare(reflect_conv2d, reflect_conv2d_reference, [x, w, b], BF16, padding=1)


def test_reflect_conv_rejects_what_reflection_cannot_do():
    x = torch.randn(1, 2, 3, 8, device=DEVICE)
    with pytest.raises(ValueError, match="needs H and W > 3"):
        reflect_conv2d(x, torch.randn(4, 2, 7, 7, device=DEVICE), padding=3)
    with pytest.raises(ValueError, match="does not fit weight"):
        reflect_conv2d(x, torch.randn(4, 3, 3, 3, device=DEVICE))
    with pytest.raises(ValueError, match="dtypes differ"):
        reflect_conv2d(x, torch.randn(4, 2, 3, 3, device=DEVICE, dtype=torch.float64))
