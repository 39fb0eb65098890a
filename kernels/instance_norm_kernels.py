"""The Triton programs behind `fastcycle.kernels.instance_norm` (the formula, the chunked statistics and
the layouts are described there): per-chunk (mean, M2) partials, the normalising pass that merges them,
and the backward's per-chunk sums and dx. Every (N, C, H, W) tensor is addressed as (n, c, hw) with the
strides of fastcycle.kernels.host.readable tensors.
"""

import triton
import triton.language as tl


@triton.jit
def partial_stats(
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
def normalize(
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
def backward_partials(
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
def backward_dx(
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
    dx_ptr,  # the arguments up to here are backward_partials', in its order
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
