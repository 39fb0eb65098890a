"""The FID feature extractor: the 2015-12-05 Inception-v3 graph of TensorFlow, up to pool3 (2048 features).

Every published FID is measured with this one network (Heusel et al.'s reference code runs the TF graph
itself; pytorch-fid, torch-fidelity and clean-fid run ports of it), so fastcycle runs the same graph,
layer for layer, with the graph's own input stage:

- resize to 299x299 bilinearly as TensorFlow 1's ResizeBilinear does (align_corners=False without
  half-pixel centres: source = destination * in/out, no antialiasing). This is what the reference graph
  and torch-fidelity do; pytorch-fid's F.interpolate (half-pixel) and clean-fid's PIL bicubic resize give
  other features and so other FIDs (clean-fid's point: compare only FIDs computed the same way);
- scale 0..255 to (x - 128) / 128.

Module and parameter names are the graph's own (`mixed_4.tower_1.conv_2`), as the TorchScript copies
of the weights carry them (fastcycle.quality.weights converts pytorch-fid's names). Each convolution is
followed by the graph's batch norm without scale (beta only, eps 1e-3) and a ReLU; the norm is folded
into the convolution's weight and bias once at load time (in inference it is an affine map: folded,
each activation is written once instead of three times).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

SIZE = 299  # the graph's input side
FEATURES = 2048  # pool3
_BN_EPS = 1e-3  # the graph's batch-norm epsilon


class Conv(nn.Module):
    """Convolution + the graph's batch norm + ReLU, the norm already folded into `weight` and `bias`
    (fold_batch_norm). Buffers, not parameters: nothing here is trained."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding=0):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride, self.padding = stride, padding
        self.register_buffer("weight", torch.zeros(cout, cin, kh, kw))
        self.register_buffer("bias", torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))


def fold_batch_norm(
    weight: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The graph's batch_norm(conv(x, w)) as one convolution: conv(x, w * s) + (beta - mean * s), with
    s = 1 / sqrt(var + eps), computed in float64 and stored in float32."""
    s = torch.rsqrt(var.double() + _BN_EPS)
    w = weight.double() * s[:, None, None, None]
    return w.float(), (beta.double() - mean.double() * s).float()


def _seq(**modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(modules))


def _avg_pool() -> nn.Module:  # the graph averages over the window's inside only
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """mixed, mixed_1, mixed_2 (35x35): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = Conv(cin, 64, 1)
        self.tower = _seq(conv=Conv(cin, 48, 1), conv_1=Conv(48, 64, 5, padding=2))
        self.tower_1 = _seq(
            conv=Conv(cin, 64, 1), conv_1=Conv(64, 96, 3, padding=1), conv_2=Conv(96, 96, 3, padding=1)
        )
        self.tower_2 = _seq(pool=_avg_pool(), conv=Conv(cin, pool_features, 1))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class MixedB(nn.Module):
    """mixed_3 (35 -> 17): 3x3 stride 2 | 1x1 -> 3x3 -> 3x3 stride 2 | max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.conv = Conv(cin, 384, 3, stride=2)
        self.tower = _seq(
            conv=Conv(cin, 64, 1), conv_1=Conv(64, 96, 3, padding=1), conv_2=Conv(96, 96, 3, stride=2)
        )
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


def _row(cin: int, cout: int) -> Conv:  # 1x7
    return Conv(cin, cout, (1, 7), padding=(0, 3))


def _col(cin: int, cout: int) -> Conv:  # 7x1
    return Conv(cin, cout, (7, 1), padding=(3, 0))


class MixedC(nn.Module):
    """mixed_4 .. mixed_7 (17x17): 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg -> 1x1."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.conv = Conv(cin, 192, 1)
        self.tower = _seq(conv=Conv(cin, c7, 1), conv_1=_row(c7, c7), conv_2=_col(c7, 192))
        self.tower_1 = _seq(
            conv=Conv(cin, c7, 1),
            conv_1=_col(c7, c7),
            conv_2=_row(c7, c7),
            conv_3=_col(c7, c7),
            conv_4=_row(c7, 192),
        )
        self.tower_2 = _seq(pool=_avg_pool(), conv=Conv(cin, 192, 1))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class MixedD(nn.Module):
    """mixed_8 (17 -> 8): 1x1 -> 3x3 stride 2 | 1x1 -> 1x7 -> 7x1 -> 3x3 stride 2 | max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.tower = _seq(conv=Conv(cin, 192, 1), conv_1=Conv(192, 320, 3, stride=2))
        self.tower_1 = _seq(
            conv=Conv(cin, 192, 1),
            conv_1=_row(192, 192),
            conv_2=_col(192, 192),
            conv_3=Conv(192, 192, 3, stride=2),
        )
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class MixedE(nn.Module):
    """mixed_9, mixed_10 (8x8): 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | pool -> 1x1.
    The graph pools by average in mixed_9 and by max in mixed_10 (pytorch-fid's FIDInceptionE_2)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.conv = Conv(cin, 320, 1)
        self.tower_conv = Conv(cin, 384, 1)
        self.tower_mixed_conv = Conv(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = Conv(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = Conv(cin, 448, 1)
        self.tower_1_conv_1 = Conv(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = Conv(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = Conv(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_pool = nn.MaxPool2d(3, stride=1, padding=1) if max_pool else _avg_pool()
        self.tower_2_conv = Conv(cin, 192, 1)

    def forward(self, x):
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat(
            [
                self.conv(x),
                self.tower_mixed_conv(a),
                self.tower_mixed_conv_1(a),
                self.tower_1_mixed_conv(b),
                self.tower_1_mixed_conv_1(b),
                self.tower_2_conv(self.tower_2_pool(x)),
            ],
            1,
        )


def resize_tf1(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """TensorFlow 1's ResizeBilinear (align_corners=False, no half-pixel centres) of float (N, C, H, W)
    to (N, C, size, size), in its float32 arithmetic: source = destination * float32(in / out), the two
    neighbours below and above it (the upper clamped to the edge) mixed linearly, along the width first,
    then the height. No antialiasing, as in the graph."""

    def axis(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(n_in / size, dtype=torch.float32)
        src = torch.arange(size, dtype=torch.float32) * scale
        lo = src.floor().long().clamp_max(n_in - 1)
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo.to(x.device), hi.to(x.device), (src - lo).to(x.device, x.dtype)

    w_lo, w_hi, w_w = axis(x.shape[3])
    x = x[..., w_lo] + (x[..., w_hi] - x[..., w_lo]) * w_w
    h_lo, h_hi, h_w = axis(x.shape[2])
    return x[:, :, h_lo] + (x[:, :, h_hi] - x[:, :, h_lo]) * h_w[:, None]


class InceptionV3(nn.Module):
    """The graph up to pool3: (N, 3, H, W) RGB pixels 0..255 (uint8 or float) -> (N, 2048) float32.

    fastcycle.quality.weights.load_inception builds it from checked weights; a bare InceptionV3() holds
    zeros."""

    def __init__(self):
        super().__init__()
        self.layers = _seq(
            conv=Conv(3, 32, 3, stride=2),
            conv_1=Conv(32, 32, 3),
            conv_2=Conv(32, 64, 3, padding=1),
            pool0=nn.MaxPool2d(3, stride=2),
            conv_3=Conv(64, 80, 1),
            conv_4=Conv(80, 192, 3),
            pool1=nn.MaxPool2d(3, stride=2),
            mixed=MixedA(192, 32),
            mixed_1=MixedA(256, 64),
            mixed_2=MixedA(288, 64),
            mixed_3=MixedB(288),
            mixed_4=MixedC(768, 128),
            mixed_5=MixedC(768, 160),
            mixed_6=MixedC(768, 160),
            mixed_7=MixedC(768, 192),
            mixed_8=MixedD(768),
            mixed_9=MixedE(1280, max_pool=False),
            mixed_10=MixedE(2048, max_pool=True),
            pool2=nn.AvgPool2d(8),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        x = images.float()
        if x.shape[2:] != (SIZE, SIZE):
            x = resize_tf1(x)
        x = (x - 128.0) / 128.0
        return self.layers(x).flatten(1)
