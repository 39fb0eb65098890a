"""Fused instance norm (+ affine) (+ ReLU) (+ residual add), forward and backward, in Triton.

    y = [relu]( (x - mean_nc) * rstd_nc [* weight_c + bias_c] ) [+ residual]
    mean_nc, var_nc over H*W of each (n, c) plane (biased variance, as nn.InstanceNorm2d),
    rstd_nc = 1 / sqrt(var_nc + eps)

Why fused: in eager PyTorch the generator's `norm -> relu` (and `x + norm(...)` in residual blocks) is
two or three full passes over the activation, and instance norm returns NCHW even for channels-last
input. Here the forward reads x twice (statistics, then normalise) and writes y once, in x's layout.

Why split: one (n, c) plane per program gives batch 1 x 256 channels only 256 programs, too few to fill
a GPU, each with a 4096-element serial reduction. Each plane is cut into SPLIT chunks along H*W; the
chunks' (mean, M2) partials are combined with Chan's parallel formula by the normalising programs
themselves, so no extra launch. Statistics are fp32 whatever the input dtype (bf16 sums of 4096 values
lose the mean's low bits, and var = E[x^2] - E[x]^2 in low precision cancels catastrophically).

Layouts: any tensor whose H and W strides satisfy stride_h == W * stride_w (contiguous NCHW and
channels-last both do) is read in place; a tile covers BLOCK_HW positions x BLOCK_C channels, shaped
so that the contiguous axis (H*W for NCHW, C for channels-last) is the long one.
"""

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

# Under Triton's CPU interpreter every program costs milliseconds of Python, so tiles there span all
# channels (up to 64) whatever the layout; the tests switch this off to run the GPU's tile shapes.
FEW_LARGE_TILES = os.environ.get("TRITON_INTERPRET") == "1"
MAX_SPLIT = 64  # partials per plane; a power of two, loaded as one vector by the combining programs


def instance_norm_reference(x, weight=None, bias=None, residual=None, relu=False, eps=1e-5):
    """The same op from torch primitives, statistics in fp32: what the tests and benchmarks compare with."""
    y = F.instance_norm(x.float(), weight=None if weight is None else weight.float(), eps=eps)
    if bias is not None:
        y = y + bias.float()[:, None, None]
    if relu:
        y = torch.relu(y)
    if residual is not None:
        y = y + residual.float()
    return y.to(x.dtype)


@triton.jit
def _partial_stats(
    x_ptr,
    mean_ptr,
    m2_ptr,
    C,
    HW,
    CHUNK,
    s_n,
    s_c,
    s_hw,
    SPLIT,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """(mean, M2) of x over one chunk of H*W for BLOCK_C channels of one image -> (N, C, SPLIT) buffers."""
    n, cb, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    lo = s * CHUNK
    hi = tl.minimum(lo + CHUNK, HW)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    count = 0.0
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        mask = (hw < hi)[:, None] & c_mask[None, :]
        x = tl.load(x_ptr + n * s_n + hw[:, None] * s_hw + c[None, :] * s_c, mask=mask, other=0.0)
        x = x.to(tl.float32)
        n_b = tl.minimum(hi - start, BLOCK_HW).to(tl.float32)
        mean_b = tl.sum(x, axis=0) / n_b
        d = tl.where(mask, x - mean_b[None, :], 0.0)
        m2_b = tl.sum(d * d, axis=0)
        # Chan et al.: merge (count, mean, M2) of the running chunk with this block's.
        total = count + n_b
        delta = mean_b - mean
        mean += delta * (n_b / total)
        m2 += m2_b + delta * delta * (count * n_b / total)
        count = total
    out = (n * C + c) * SPLIT + s
    tl.store(mean_ptr + out, mean, mask=c_mask)
    tl.store(m2_ptr + out, m2, mask=c_mask)


@triton.jit
def _plane_stats(mean_ptr, m2_ptr, n, c, c_mask, C, HW, CHUNK, SPLIT, eps, SPLIT_P2: tl.constexpr):
    """Combine a plane's SPLIT partials into its mean and rstd (fp32), for BLOCK_C channels."""
    s = tl.arange(0, SPLIT_P2)
    s_mask = s < SPLIT
    offs = (n * C + c)[None, :] * SPLIT + s[:, None]
    mask = s_mask[:, None] & c_mask[None, :]
    mean_s = tl.load(mean_ptr + offs, mask=mask, other=0.0)
    m2_s = tl.load(m2_ptr + offs, mask=mask, other=0.0)
    count_s = tl.minimum(tl.maximum(HW - s * CHUNK, 0), CHUNK).to(tl.float32)[:, None]
    mean = tl.sum(mean_s * count_s, axis=0) / HW
    d = tl.where(mask, mean_s - mean[None, :], 0.0)
    var = tl.sum(m2_s + count_s * d * d, axis=0) / HW
    return mean, 1.0 / tl.sqrt(var + eps)


@triton.jit
def _normalize(
    x_ptr,
    w_ptr,
    b_ptr,
    r_ptr,
    y_ptr,
    mean_ptr,
    m2_ptr,
    saved_mean_ptr,
    saved_rstd_ptr,
    C,
    HW,
    CHUNK,
    s_n,
    s_c,
    s_hw,
    r_n,
    r_c,
    r_hw,
    y_n,
    y_c,
    y_hw,
    SPLIT,
    eps,
    AFFINE: tl.constexpr,
    RELU: tl.constexpr,
    RESIDUAL: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
    SPLIT_P2: tl.constexpr,
):
    n, cb, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    mean, rstd = _plane_stats(mean_ptr, m2_ptr, n, c, c_mask, C, HW, CHUNK, SPLIT, eps, SPLIT_P2)
    if s == 0:  # the backward pass re-derives x_hat from x and these instead of storing it
        tl.store(saved_mean_ptr + n * C + c, mean, mask=c_mask)
        tl.store(saved_rstd_ptr + n * C + c, rstd, mask=c_mask)
    w, b = _affine(w_ptr, b_ptr, c, c_mask, AFFINE, BLOCK_C)
    scale = rstd * w
    shift = b - mean * rstd * w
    lo = s * CHUNK
    hi = tl.minimum(lo + CHUNK, HW)
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        mask = (hw < hi)[:, None] & c_mask[None, :]
        x = tl.load(x_ptr + n * s_n + hw[:, None] * s_hw + c[None, :] * s_c, mask=mask, other=0.0)
        y = x.to(tl.float32) * scale[None, :] + shift[None, :]
        if RELU:
            y = tl.maximum(y, 0.0)
        if RESIDUAL:
            r = tl.load(r_ptr + n * r_n + hw[:, None] * r_hw + c[None, :] * r_c, mask=mask, other=0.0)
            y += r.to(tl.float32)
        tl.store(y_ptr + n * y_n + hw[:, None] * y_hw + c[None, :] * y_c, y, mask=mask)


@triton.jit
def _affine(w_ptr, b_ptr, c, c_mask, AFFINE: tl.constexpr, BLOCK_C: tl.constexpr):
    """(weight, bias) of BLOCK_C channels in fp32; (1, 0) without affine parameters."""
    if AFFINE:
        w = tl.load(w_ptr + c, mask=c_mask, other=1.0).to(tl.float32)
        b = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    else:
        w = tl.full([BLOCK_C], 1.0, tl.float32)
        b = tl.zeros([BLOCK_C], tl.float32)
    return w, b


@triton.jit
def _x_hat_and_grad(x, g, mean, rstd, w, b, RELU: tl.constexpr):
    """x_hat, and the upstream gradient through the ReLU, whose mask is recomputed rather than stored."""
    x_hat = (x.to(tl.float32) - mean[None, :]) * rstd[None, :]
    g = g.to(tl.float32)
    if RELU:
        g = tl.where(x_hat * w[None, :] + b[None, :] > 0.0, g, 0.0)
    return x_hat, g


@triton.jit
def _backward_partials(
    x_ptr,
    g_ptr,
    w_ptr,
    b_ptr,
    saved_mean_ptr,
    saved_rstd_ptr,
    sum_g_ptr,
    sum_gx_ptr,
    C,
    HW,
    CHUNK,
    s_n,
    s_c,
    s_hw,
    g_n,
    g_c,
    g_hw,
    SPLIT,
    AFFINE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per chunk: sum(g) and sum(g * x_hat), g the upstream gradient through the ReLU's mask."""
    n, cb, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    mean = tl.load(saved_mean_ptr + n * C + c, mask=c_mask, other=0.0)
    rstd = tl.load(saved_rstd_ptr + n * C + c, mask=c_mask, other=0.0)
    w, b = _affine(w_ptr, b_ptr, c, c_mask, AFFINE, BLOCK_C)
    sum_g = tl.zeros([BLOCK_C], tl.float32)
    sum_gx = tl.zeros([BLOCK_C], tl.float32)
    lo = s * CHUNK
    hi = tl.minimum(lo + CHUNK, HW)
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        mask = (hw < hi)[:, None] & c_mask[None, :]
        x = tl.load(x_ptr + n * s_n + hw[:, None] * s_hw + c[None, :] * s_c, mask=mask, other=0.0)
        g = tl.load(g_ptr + n * g_n + hw[:, None] * g_hw + c[None, :] * g_c, mask=mask, other=0.0)
        x_hat, g = _x_hat_and_grad(x, g, mean, rstd, w, b, RELU)
        sum_g += tl.sum(g, axis=0)
        sum_gx += tl.sum(g * x_hat, axis=0)
    out = (n * C + c) * SPLIT + s
    tl.store(sum_g_ptr + out, sum_g, mask=c_mask)
    tl.store(sum_gx_ptr + out, sum_gx, mask=c_mask)


@triton.jit
def _backward_dx(
    x_ptr,
    g_ptr,
    w_ptr,
    b_ptr,
    saved_mean_ptr,
    saved_rstd_ptr,
    sum_g_ptr,
    sum_gx_ptr,
    C,
    HW,
    CHUNK,
    s_n,
    s_c,
    s_hw,
    g_n,
    g_c,
    g_hw,
    SPLIT,
    dx_ptr,  # the arguments up to here are _backward_partials', in its order
    d_n,
    d_c,
    d_hw,
    AFFINE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
    SPLIT_P2: tl.constexpr,
):
    """dx = rstd * w * (g - mean(g) - x_hat * mean(g * x_hat)), means over the plane."""
    n, cb, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    sp = tl.arange(0, SPLIT_P2)
    offs = (n * C + c)[None, :] * SPLIT + sp[:, None]
    pmask = (sp < SPLIT)[:, None] & c_mask[None, :]
    mean_g = tl.sum(tl.load(sum_g_ptr + offs, mask=pmask, other=0.0), axis=0) / HW
    mean_gx = tl.sum(tl.load(sum_gx_ptr + offs, mask=pmask, other=0.0), axis=0) / HW
    mean = tl.load(saved_mean_ptr + n * C + c, mask=c_mask, other=0.0)
    rstd = tl.load(saved_rstd_ptr + n * C + c, mask=c_mask, other=0.0)
    w, b = _affine(w_ptr, b_ptr, c, c_mask, AFFINE, BLOCK_C)
    scale = rstd * w
    lo = s * CHUNK
    hi = tl.minimum(lo + CHUNK, HW)
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        mask = (hw < hi)[:, None] & c_mask[None, :]
        x = tl.load(x_ptr + n * s_n + hw[:, None] * s_hw + c[None, :] * s_c, mask=mask, other=0.0)
        g = tl.load(g_ptr + n * g_n + hw[:, None] * g_hw + c[None, :] * g_c, mask=mask, other=0.0)
        x_hat, g = _x_hat_and_grad(x, g, mean, rstd, w, b, RELU)
        dx = scale[None, :] * (g - mean_g[None, :] - x_hat * mean_gx[None, :])
        tl.store(dx_ptr + n * d_n + hw[:, None] * d_hw + c[None, :] * d_c, dx, mask=mask)


def _nc_hw_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(stride_n, stride_c, stride_hw) of an (N, C, H, W) tensor whose H*W positions are evenly spaced."""
    return t.stride(0), t.stride(1), t.stride(3)


def _readable(t: torch.Tensor) -> torch.Tensor:
    """t itself when its (H, W) positions are evenly spaced (NCHW or channels-last), else a copy."""
    _, _, H, W = t.shape
    if t.stride(2) == W * t.stride(3) or H == 1:
        return t
    return t.contiguous()


def _launch_config(x: torch.Tensor, split: int | None):
    N, C, H, W = x.shape
    HW = H * W
    if (x.stride(1) == 1 and C > 1) or FEW_LARGE_TILES:  # channels-last: C is contiguous, tile wide in C
        block_c = min(64, triton.next_power_of_2(C))
        block_hw = max(16, 2048 // block_c)
    else:  # NCHW: H*W is contiguous, tile long in H*W
        block_c = 1
        block_hw = 1024
    block_hw = min(block_hw, max(16, triton.next_power_of_2(HW)))
    c_blocks = triton.cdiv(C, block_c)
    if split is None:
        # Enough programs to fill the GPU several times over (132 SMs on an H100), but no chunk
        # shorter than a tile, where the partials' overhead would dominate.
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 8
        split = triton.cdiv(4 * sms, N * c_blocks)
    split = max(1, min(split, MAX_SPLIT, triton.cdiv(HW, block_hw)))
    chunk = triton.cdiv(triton.cdiv(HW, split), block_hw) * block_hw  # whole tiles per chunk
    split = triton.cdiv(HW, chunk)
    return dict(block_c=block_c, block_hw=block_hw, c_blocks=c_blocks, split=split, chunk=chunk)


def _forward(x, weight, bias, residual, relu, eps, cfg):
    N, C, H, W = x.shape
    HW = H * W
    grid = (N, cfg["c_blocks"], cfg["split"])
    f32 = dict(device=x.device, dtype=torch.float32)
    mean_p = torch.empty(N, C, cfg["split"], **f32)
    m2_p = torch.empty_like(mean_p)
    _partial_stats[grid](
        x,
        mean_p,
        m2_p,
        C,
        HW,
        cfg["chunk"],
        *_nc_hw_strides(x),
        cfg["split"],
        BLOCK_HW=cfg["block_hw"],
        BLOCK_C=cfg["block_c"],
    )
    y = torch.empty_like(x)  # same layout as x: channels-last stays channels-last
    saved_mean = torch.empty(N, C, **f32)
    saved_rstd = torch.empty(N, C, **f32)
    affine = weight is not None
    r = residual if residual is not None else x
    _normalize[grid](
        x,
        weight if affine else x,
        bias if affine else x,
        r,
        y,
        mean_p,
        m2_p,
        saved_mean,
        saved_rstd,
        C,
        HW,
        cfg["chunk"],
        *_nc_hw_strides(x),
        *_nc_hw_strides(r),
        *_nc_hw_strides(y),
        cfg["split"],
        eps,
        AFFINE=affine,
        RELU=relu,
        RESIDUAL=residual is not None,
        BLOCK_HW=cfg["block_hw"],
        BLOCK_C=cfg["block_c"],
        SPLIT_P2=triton.next_power_of_2(cfg["split"]),
    )
    return y, saved_mean, saved_rstd


def _backward(x, weight, bias, saved_mean, saved_rstd, grad_y, relu, cfg):
    N, C, H, W = x.shape
    HW = H * W
    grid = (N, cfg["c_blocks"], cfg["split"])
    sum_g = torch.empty(N, C, cfg["split"], device=x.device, dtype=torch.float32)
    sum_gx = torch.empty_like(sum_g)
    affine = weight is not None
    w = weight if affine else x
    b = bias if affine else x
    args = (x, grad_y, w, b, saved_mean, saved_rstd, sum_g, sum_gx, C, HW, cfg["chunk"])
    args += (*_nc_hw_strides(x), *_nc_hw_strides(grad_y), cfg["split"])
    meta = dict(AFFINE=affine, RELU=relu, BLOCK_HW=cfg["block_hw"], BLOCK_C=cfg["block_c"])
    _backward_partials[grid](*args, **meta)
    dx = torch.empty_like(x)
    _backward_dx[grid](*args, dx, *_nc_hw_strides(dx), **meta, SPLIT_P2=triton.next_power_of_2(cfg["split"]))
    if not affine:
        return dx, None, None
    # d(weight) = sum over images and positions of g * x_hat; d(bias) = sum of g: (N, C, SPLIT) -> (C,)
    return dx, sum_gx.sum((0, 2)).to(weight.dtype), sum_g.sum((0, 2)).to(bias.dtype)


class InstanceNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, relu, eps, split):
        cfg = _launch_config(x, split)  # the backward launches over the same tiles and chunks
        y, mean, rstd = _forward(x, weight, bias, residual, relu, eps, cfg)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.relu, ctx.cfg, ctx.has_residual = relu, cfg, residual is not None
        ctx.residual_dtype = None if residual is None else residual.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        grad_y = _readable(grad_y)
        dx, dw, db = _backward(x, weight, bias, mean, rstd, grad_y, ctx.relu, ctx.cfg)
        d_residual = grad_y.to(ctx.residual_dtype) if ctx.has_residual else None  # the add passes g through
        return dx, dw, db, d_residual, None, None, None


# torch.compile runs this eagerly, between compiled regions: registering the kernels as
# torch.library.triton_op ops would let Inductor place them in its graphs (not done yet).
@torch.compiler.disable
def instance_norm(x, weight=None, bias=None, residual=None, relu=False, eps=1e-5, split=None):
    """Fused `[relu](instance_norm(x) [* weight + bias]) [+ residual]` for (N, C, H, W) input.

    Output has x's dtype and memory layout. `split` (chunks per plane) is picked for the GPU when None;
    tests set it to exercise the partial-statistics path on small shapes.
    """
    if x.dim() != 4:
        raise ValueError(f"instance_norm expects (N, C, H, W) input, got shape {tuple(x.shape)}")
    if (weight is None) != (bias is None):
        raise ValueError("instance_norm takes both weight and bias, or neither")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} != input shape {tuple(x.shape)}")
    x = _readable(x)
    residual = None if residual is None else _readable(residual)
    return InstanceNormFunction.apply(x, weight, bias, residual, relu, eps, split)
