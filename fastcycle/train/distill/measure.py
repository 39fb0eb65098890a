"""What a distillation report measures: a generator's cost (parameters, multiply-adds), its speed next
to another's, and image similarity (SSIM; PSNR is fastcycle.data.demo.psnr)."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fastcycle.models import build_generator


def generator_cost(netG: str, ngf: int, norm: str, size: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of one size x size image through generator `netG`, counted by torch's
    FlopCounterMode (FLOPs / 2) on the meta device: from the real layer shapes, without computing.
    Transposed convs count per input pixel, as PyTorch counts them: resnet_9blocks at 256x256 is
    49.55 G (GAN Compression, counting per output pixel, quotes 56.8 G)."""
    with torch.device("meta"):
        net = build_generator(netG, ngf=ngf, norm=norm)
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return sum(p.numel() for p in net.parameters()), counter.get_total_flops() // 2


def _gaussian_window(channels: int, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size)  # (C, 1, 11, 11), one per channel


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) SSIM (Wang et al. 2004) of uint8 (N, C, H, W) images, H and W >= 11: local statistics under
    an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, peak 255, averaged over the channels and the
    window positions inside the image. Equals skimage's structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=...). In float64: the
    variances are differences of large means."""
    x, y = x.double(), y.double()
    window = _gaussian_window(x.shape[1]).to(x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=x.shape[1])  # (N, C, H - 10, W - 10): no padding

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def images_per_second(
    nets: dict[str, nn.Module],
    batch: int,
    size: int,
    device: torch.device,
    min_seconds: float = 2.0,
    input_nc: int = 3,
) -> dict[str, float]:
    """Images/s of each network on the same random (batch, input_nc, size, size) input, side by side:
    rounds of one call of each, so that a load change on a shared machine hits all of them alike, until every
    network has had 3 calls and the rounds took min_seconds per network; the median call of each,
    after a warm-up call, with a device sync before every clock read."""
    x = torch.rand(batch, input_nc, size, size, device=device) * 2 - 1
    for net in nets.values():  # allocator, oneDNN/cuDNN algorithm choice
        net(x)
    times: dict[str, list[float]] = {name: [] for name in nets}
    start = time.perf_counter()
    while min(map(len, times.values())) < 3 or time.perf_counter() - start < min_seconds * len(nets):
        for name, net in nets.items():
            _sync(device)
            t0 = time.perf_counter()
            net(x)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: batch / statistics.median(t) for name, t in times.items()}
