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

Three layers: the Triton programs (instance_norm_kernels.py), the host code that picks tiles and
launches them (here), and two custom ops, forward and backward, with fake implementations and an
autograd formula, so that torch.compile traces through the op instead of breaking its graph.
"""

import torch
import torch.nn.functional as F
import triton

from fastcycle.kernels import host
from fastcycle.kernels.instance_norm_kernels import backward_dx, backward_partials, normalize, partial_stats

MAX_SPLIT = 64  # partials per plane; a power of two, loaded as one vector by the combining programs


def instance_norm_reference(x, weight=None, bias=None, residual=None, relu=False, eps=1e-5):
    """The same op from torch primitives, statistics in fp32 (float64 for float64 input, an exact
    oracle): what the tests and benchmarks compare with."""
    acc = torch.promote_types(x.dtype, torch.float32)
    y = F.instance_norm(x.to(acc), weight=None if weight is None else weight.to(acc), eps=eps)
    if bias is not None:
        y = y + bias.to(acc)[:, None, None]
    if relu:
        y = torch.relu(y)
    if residual is not None:
        y = y + residual.to(acc)
    return y.to(x.dtype)


def _nc_hw_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(stride_n, stride_c, stride_hw) of a host.readable (N, C, H, W) tensor."""
    return t.stride(0), t.stride(1), t.stride(3)


def _launch_config(x: torch.Tensor, split: int | None):
    N, C, H, W = x.shape
    HW = H * W
    # channels-last: C is contiguous, tile wide in C. Under the interpreter, wide tiles everywhere.
    if (x.stride(1) == 1 and C > 1) or host.FEW_LARGE_TILES:
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
    partial_stats[grid](
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
    normalize[grid](
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
    """dx, and the (C,) fp32 sums that are d(weight) (of g * x_hat) and d(bias) (of g)."""
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
    backward_partials[grid](*args, **meta)
    dx = torch.empty_like(x)
    backward_dx[grid](*args, dx, *_nc_hw_strides(dx), **meta, SPLIT_P2=triton.next_power_of_2(cfg["split"]))
    return dx, sum_gx.sum((0, 2)), sum_g.sum((0, 2))  # (N, C, SPLIT) -> (C,)


# Custom ops rather than torch.library.triton_op: Inductor treats a custom op as one opaque call with
# the strides its fake implementation states, which works on every torch this project supports, on
# GPUs and under Triton's CPU interpreter alike. triton_op/wrap_triton cannot take the interpreter's
# kernels (torch 2.11 refuses them; 2.14 reads data pointers of fake tensors while tracing), and the
# ops are already fused: there is nothing left for Inductor to fuse into them. needs_exact_strides:
# a compiled graph hands the op its inputs with the strides eager mode would (NCHW or channels-last).
@torch.library.custom_op("fastcycle::instance_norm", mutates_args=(), tags=(torch.Tag.needs_exact_strides,))
def _instance_norm_op(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    relu: bool,
    eps: float,
    split: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd): y in x's layout, (N, C) fp32 statistics for the backward."""
    x = host.readable(x)
    residual = None if residual is None else host.readable(residual)
    return _forward(x, weight, bias, residual, relu, eps, _launch_config(x, split))


@_instance_norm_op.register_fake
def _(x, weight, bias, residual, relu, eps, split):
    N, C = x.shape[:2]
    stats = dict(device=x.device, dtype=torch.float32)
    return torch.empty_like(host.readable(x)), torch.empty(N, C, **stats), torch.empty(N, C, **stats)


@torch.library.custom_op(
    "fastcycle::instance_norm_backward", mutates_args=(), tags=(torch.Tag.needs_exact_strides,)
)
def _instance_norm_backward_op(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    grad_y: torch.Tensor,
    relu: bool,
    split: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx in x's layout, (C,) fp32 d(weight), (C,) fp32 d(bias)); the sums are made with or without
    affine parameters, and dropped by the autograd formula without."""
    x = host.readable(x)
    cfg = _launch_config(x, split)  # the forward's tiles: x is the same tensor
    return _backward(x, weight, bias, mean, rstd, host.readable(grad_y), relu, cfg)


@_instance_norm_backward_op.register_fake
def _(x, weight, bias, mean, rstd, grad_y, relu, split):
    C = x.shape[1]
    sums = dict(device=x.device, dtype=torch.float32)
    return torch.empty_like(host.readable(x)), torch.empty(C, **sums), torch.empty(C, **sums)


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, relu, _eps, split = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.relu, ctx.split = relu, split
    ctx.residual_dtype = None if residual is None else residual.dtype


def _instance_norm_grad(ctx, grad_y, _grad_mean, _grad_rstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dw, db = _instance_norm_backward_op(x, weight, bias, mean, rstd, grad_y, ctx.relu, ctx.split)
    if weight is None:
        dw = db = None
    else:
        dw, db = dw.to(weight.dtype), db.to(bias.dtype)
    d_residual = None if ctx.residual_dtype is None else grad_y.to(ctx.residual_dtype)  # the add passes g
    return dx, dw, db, d_residual, None, None, None


_instance_norm_op.register_autograd(_instance_norm_grad, setup_context=_setup_context)


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
    return _instance_norm_op(x, weight, bias, residual, relu, eps, split)[0]
