"""How far apart two correct float computations of the same values may be: derived from the dtype, the
length of the reductions and the depth of the network, not from one machine's observed error.

Two correct implementations of a network (the reference and fastcycle, eager and Inductor or the fused
kernels, PyTorch and an export, one process and two ranks) differ in the order of their floating-point
sums: oneDNN, Triton and Inductor block a reduction differently on different CPUs (AVX-512 or AVX2),
thread counts and tile sizes. The model, in the standard probabilistic form of rounding-error analysis
(Higham, Accuracy and Stability of Numerical Algorithms, ch. 4; Higham and Mary, SIAM J. Sci. Comput.
2019), for values of magnitude about 1 (renormalised activations, tanh outputs, losses of order 1):

- a reduction of n terms, each addition rounded with unit roundoff u = eps / 2, is off by a relative
  error of standard deviation about u * sqrt(n) (independent roundings add like a random walk);
- two computations each carry one such error: x sqrt(2) between them;
- `depth` layers that each renormalise their input pass an error on with a gain of about 1, and the
  layers' independent errors add up: x sqrt(depth);
- the largest of `elements` such Gaussian differences lies near sqrt(2 ln elements) standard deviations;
- MARGIN for what the model leaves out (correlated roundings, a norm over a low-variance plane).

For fp32 this gives 1e-5 to 2e-4 for the networks in these tests, where a real fault (a weight in the
wrong place, a wrong epsilon, a lost layer, a misread layout) is off by 1e-3 to 1: a tolerance from this
module can still fail.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

MARGIN = 2.0


def sum_order_atol(dtype: torch.dtype, terms: int, depth: int = 1, elements: int = 1) -> float:
    """Largest expected |a - b| between two computations of the same O(1) values whose reductions sum
    up to `terms` terms in another order, through `depth` renormalising layers, over `elements` values."""
    u = torch.finfo(dtype).eps / 2
    sd = u * math.sqrt(terms) * math.sqrt(2) * math.sqrt(depth)
    return MARGIN * sd * math.sqrt(2 * math.log(max(elements, 2)))


def reductions(net: nn.Module, x: torch.Tensor, backward: bool = False) -> tuple[int, int]:
    """(the longest reduction, the number of weighted layers on the way) of `net` on `x`, from one
    forward pass.

    A convolution's output sums in_channels / groups x kh x kw products (a transposed one, stride^2
    fewer per output); a linear layer's, in_features; a norm reduces over the H x W plane it is given
    (instance norm) or N x H x W (batch norm in training). With `backward`, for gradients: a weight's
    gradient also sums over every output position of the batch (N x H_out x W_out), and the backward
    pass runs the layers a second time, in reverse (depth x 2).
    """
    terms, depth = [1], [0]

    def note(m: nn.Module, args: tuple, out) -> None:
        shape = args[0].shape
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            kh, kw = m.kernel_size
            sh, sw = m.stride if isinstance(m, nn.ConvTranspose2d) else (1, 1)
            terms[0] = max(terms[0], m.in_channels // m.groups * math.ceil(kh / sh) * math.ceil(kw / sw))
            if backward:
                terms[0] = max(terms[0], out.shape[0] * math.prod(out.shape[2:]))
            depth[0] += 1
        elif isinstance(m, nn.Linear):
            terms[0], depth[0] = max(terms[0], m.in_features, out.numel() // out.shape[-1]), depth[0] + 1
        elif isinstance(m, nn.modules.batchnorm._NormBase):  # batch and instance norm
            per_image = math.prod(shape[2:])
            terms[0] = max(terms[0], per_image * (shape[0] if m.training and m.track_running_stats else 1))

    # A copy on the meta device: shapes only, no arithmetic, and the caller's network (batch norm's
    # running statistics, the random stream its dropout draws from) is left as it was.
    probe = copy.deepcopy(net).to("meta")
    for m in probe.modules():
        m.register_forward_hook(note)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        probe(x.to("meta"))
    return terms[0], max(depth[0], 1) * (2 if backward else 1)


def network_atol(
    net: nn.Module, x: torch.Tensor, elements: int | None = None, backward: bool = False
) -> float:
    """sum_order_atol for `net` on `x` in x's dtype: its outputs (`elements` of them, x's count by
    default), or with `backward` its input and weight gradients."""
    terms, depth = reductions(net, x, backward)
    return sum_order_atol(x.dtype, terms, depth, elements if elements is not None else x.numel())


def cycle_step_atol(nets: dict[str, nn.Module], x: torch.Tensor, values: int, steps: int = 1) -> float:
    """sum_order_atol for `values` losses or gradients of `steps` CycleGAN training steps on batches
    shaped like x, each step's forward and backward: the longest path runs a generator, the other one
    (the cycle) and a discriminator, and every step's updates carry its differences into the next."""
    t_G, d_G = reductions(nets["G_AB"], x, backward=True)
    t_D, d_D = reductions(nets["D_A"], x, backward=True)
    return sum_order_atol(x.dtype, max(t_G, t_D), (2 * d_G + d_D) * steps, values)


def assert_close_in_net(got: torch.Tensor, want: torch.Tensor, net: nn.Module, x: torch.Tensor, **kw) -> None:
    """`got` equals `want`, values of `net` on `x` (outputs, or with backward=True gradients), up to the
    order of their sums; the tolerance is relative for values above 1. `net` is counted on the meta
    device: for fused kernels, pass the network of the same layers on torch's ops."""
    tol = network_atol(net, x, want.numel(), kw.pop("backward", False))
    torch.testing.assert_close(got, want, atol=tol, rtol=tol, **kw)


def assert_same_gradients(a: nn.Module, b: nn.Module, x: torch.Tensor, like: nn.Module | None = None) -> None:
    """Every parameter gradient of b equals a's, up to the order of their sums, relative to the network's
    largest gradient: the biases in front of instance norm have a true gradient of exactly zero (the
    mean subtraction removes them), so theirs is rounding noise on both sides, and a per-tensor relative
    tolerance would compare noise with noise. `like`: a network of a's layers on torch's ops, to count
    the reductions on when a's own layers (fused kernels) cannot run on the meta device."""
    tol = network_atol(like or a, x, sum(p.numel() for p in a.parameters()), backward=True)
    scale = max(p.grad.abs().max().item() for p in a.parameters())
    for (key, p_a), p_b in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p_b.grad, p_a.grad, atol=tol * scale, rtol=tol, msg=key)
