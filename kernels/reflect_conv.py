"""Reflection padding folded into a convolution: `conv2d(reflection_pad2d(x, p), weight, bias)` in Triton.

    y[n, oh, ow, co] = bias[co] + sum_{kh, kw, ci} x[n, r(oh*s - p + kh, H), r(ow*s - p + kw, W), ci]
                                                   * weight[co, ci, kh, kw]
    r(i, L) = -i if i < 0, 2*(L-1) - i if i >= L, else i   (reflection without repeating the edge)

Why: eager PyTorch writes the padded activation (for 64x64x256 bf16 that is another 2.2 MB per image
written and read back) before cuDNN reads it again. Here the reflection happens in the address
computation of an implicit GEMM, so the padded tensor never exists:
M = N*Ho*Wo output positions, N = C_out, K = KH*KW*C_in, tiles multiplied on tensor cores (tl.dot)
with fp32 accumulation, output in the input's dtype and layout (channels-last in, channels-last out).
K is walked in (kh, kw, ci) order, ci fastest: on channels-last input with C_in a multiple of
BLOCK_K each K tile is one contiguous channel run of one input pixel; the 7x7 convs on 3 channels
still work (a K tile then spans several kernel taps).

Backward uses cuDNN through `aten.convolution_backward` on the padded input (materialised only there)
and folds the padding's gradient back with `aten.reflection_pad2d_backward`: correct, not fused.

The op is a custom op (`fastcycle::reflect_conv2d`, see instance_norm.py for why not triton_op) with a
fake implementation and an autograd formula, so torch.compile traces through it.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fastcycle.kernels import host


def reflect_conv2d_reference(x, weight, bias=None, padding=1, stride=1):
    """The same op from torch primitives: what the tests and benchmarks compare with."""
    return F.conv2d(F.pad(x, (padding,) * 4, mode="reflect"), weight, bias, stride=stride)


@triton.jit
def _reflect_conv_fwd(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    H,
    W,
    C_in,
    Ho,
    Wo,
    C_out,
    M,
    K,
    x_n,
    x_h,
    x_w,
    x_c,
    y_n,
    y_h,
    y_w,
    y_c,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output positions (n, oh, ow)
    co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
    m_mask = m < M
    co_mask = co < C_out
    n = m // (Ho * Wo)
    oh = (m // Wo) % Ho
    ow = m % Wo
    x_base = x_ptr + n * x_n
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = k < K
        ci = k % C_in
        tap = k // C_in
        kh = tap // KW
        kw = tap % KW
        ih = oh[:, None] * STRIDE - PAD + kh[None, :]  # (BLOCK_M, BLOCK_K)
        iw = ow[:, None] * STRIDE - PAD + kw[None, :]
        ih = tl.where(ih < 0, -ih, ih)
        ih = tl.where(ih >= H, 2 * (H - 1) - ih, ih)
        iw = tl.where(iw < 0, -iw, iw)
        iw = tl.where(iw >= W, 2 * (W - 1) - iw, iw)
        a_mask = m_mask[:, None] & k_mask[None, :]
        a = tl.load(x_base[:, None] + ih * x_h + iw * x_w + ci[None, :] * x_c, mask=a_mask, other=0.0)
        b_mask = k_mask[:, None] & co_mask[None, :]
        b = tl.load(w_ptr + k[:, None] * C_out + co[None, :], mask=b_mask, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        # fp32 inputs: TF32 tensor cores; bf16/fp16: native ones (a constexpr if: one branch compiles)
        if ALLOW_TF32:  # noqa: SIM108
            acc = tl.dot(a, b, acc)
        else:  # fp32 inputs with TF32 off, as cuDNN has it
            acc = tl.dot(a, b, acc, input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_mask, other=0.0).to(tl.float32)[None, :]
    y_off = (n * y_n + oh * y_h + ow * y_w)[:, None] + co[None, :] * y_c
    tl.store(y_ptr + y_off, acc, mask=m_mask[:, None] & co_mask[None, :])


def _pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, KH, KW) -> (KH*KW*C_in, C_out): the GEMM's B operand in the kernel's K order.

    A copy of the weights per call (590k values for a 256->256 3x3 conv, ~1% of the activation
    traffic at batch 1), in exchange for contiguous, coalesced B tiles.
    """
    C_out, C_in, KH, KW = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(KH * KW * C_in, C_out).contiguous()


def _block_sizes(M: int, C_out: int, K: int, dtype: torch.dtype):
    if host.FEW_LARGE_TILES:  # each program costs milliseconds of Python there: few, large tiles
        return 256, min(64, max(16, triton.next_power_of_2(C_out))), 64
    # 64x64 output tiles with 32-deep K steps keep a bf16 tile pair in 8 KB of shared memory and give
    # 4096 x 256 / (64*64) = 256 programs for a batch-1 residual conv: two waves on 132 SMs.
    block_m = 64 if M >= 64 else max(16, triton.next_power_of_2(M))
    block_n = min(64, max(16, triton.next_power_of_2(C_out)))
    block_k = 32 if dtype != torch.float32 else 16
    block_k = min(block_k, max(16, triton.next_power_of_2(K)))
    return block_m, block_n, block_k


def _empty_output(x: torch.Tensor, weight: torch.Tensor, padding: int, stride: int) -> torch.Tensor:
    """(N, C_out, Ho, Wo) in x's dtype and layout: what the kernel writes, and what the fake op states."""
    N, _, H, W = x.shape
    C_out, _, KH, KW = weight.shape
    Ho = (H + 2 * padding - KH) // stride + 1
    Wo = (W + 2 * padding - KW) // stride + 1
    return torch.empty(N, C_out, Ho, Wo, device=x.device, dtype=x.dtype, memory_format=host.memory_format(x))


def _forward(x, weight, bias, padding, stride):
    N, C_in, H, W = x.shape
    C_out, _, KH, KW = weight.shape
    y = _empty_output(x, weight, padding, stride)
    Ho, Wo = y.shape[2:]
    M, K = N * Ho * Wo, KH * KW * C_in
    block_m, block_n, block_k = _block_sizes(M, C_out, K, x.dtype)
    grid = (triton.cdiv(M, block_m), triton.cdiv(C_out, block_n))
    _reflect_conv_fwd[grid](
        x,
        _pack_weight(weight),
        bias if bias is not None else x,
        y,
        H,
        W,
        C_in,
        Ho,
        Wo,
        C_out,
        M,
        K,
        *_nhwc_strides(x),
        *_nhwc_strides(y),
        STRIDE=stride,
        PAD=padding,
        KW=KW,
        HAS_BIAS=bias is not None,
        # fp32 inputs follow cuDNN's setting, so the switch does not change fp32 numerics.
        ALLOW_TF32=x.dtype != torch.float32 or (torch.backends.cudnn.allow_tf32 and x.is_cuda),
        # Triton's CPU interpreter multiplies bf16 operands of tl.dot as raw bit patterns
        # (triton-lang/triton#11584, "not supported yet"): there, bf16 tiles are widened to fp32 first.
        UPCAST=host.INTERPRETED and x.dtype == torch.bfloat16,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return y


def _nhwc_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(2), t.stride(3), t.stride(1)


@torch.library.custom_op("fastcycle::reflect_conv2d", mutates_args=(), tags=(torch.Tag.needs_exact_strides,))
def _reflect_conv_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, stride: int
) -> torch.Tensor:
    return _forward(host.readable(x), weight, bias, padding, stride)


@_reflect_conv_op.register_fake
def _(x, weight, bias, padding, stride):
    return _empty_output(host.readable(x), weight, padding, stride)


def _setup_context(ctx, inputs, output):
    x, weight, bias, padding, stride = inputs
    ctx.save_for_backward(x, weight)
    ctx.padding, ctx.stride, ctx.has_bias = padding, stride, bias is not None


def _reflect_conv_grad(ctx, grad_y):
    x, weight = ctx.saved_tensors
    p = ctx.padding
    x_pad = F.pad(x, (p,) * 4, mode="reflect")
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_x_pad, grad_w, grad_b = torch.ops.aten.convolution_backward(
        grad_y.to(x.dtype),
        x_pad,
        weight,
        [weight.shape[0]] if ctx.has_bias else None,
        [ctx.stride] * 2,
        [0, 0],
        [1, 1],
        False,
        [0, 0],
        1,
        [need_x, need_w, need_b and ctx.has_bias],
    )
    grad_x = torch.ops.aten.reflection_pad2d_backward(grad_x_pad, x, [p] * 4) if need_x else None
    return grad_x, grad_w, grad_b, None, None


_reflect_conv_op.register_autograd(_reflect_conv_grad, setup_context=_setup_context)


def reflect_conv2d(x, weight, bias=None, padding=1, stride=1):
    """`conv2d(pad(x, padding, mode="reflect"), weight, bias, stride)` without the padded tensor.

    x (N, C_in, H, W) in NCHW or channels-last, any float dtype (weight and bias must match it);
    padding < H and < W, as reflection requires.
    """
    if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"reflect_conv2d: input {tuple(x.shape)} does not fit weight {tuple(weight.shape)}")
    if padding >= x.shape[2] or padding >= x.shape[3]:
        raise ValueError(f"reflection padding {padding} needs H and W > {padding}, got {tuple(x.shape[2:])}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"reflect_conv2d: dtypes differ (input {x.dtype}, weight {weight.dtype})")
    return _reflect_conv_op(x, weight, bias, padding, stride)
