"""The mobile ResNet generator of GAN Compression (Li et al. 2020; mit-han-lab/gan-compression's
`MobileResnetGenerator`): the CycleGAN ResNet generator with every 3x3 convolution of its residual blocks
replaced by a depthwise-separable one, the cheap student that `fastcycle distill` trains by default.

The stem, the two downsamplings, the upsamplings and the output layer are the ResNet generator's, so
the module tree and state-dict keys are GAN Compression's (`model.10.conv_block.1.conv.0.weight`, ...)
and the generator drops into export and translate unchanged. At 256x256 with ngf 64 the residual
blocks are 43.5 of the ResNet generator's 49.55 G multiply-adds; separable, they cost 5.0 G.
"""

from torch import nn

from fastcycle.models.generators import ResnetGenerator
from fastcycle.models.norms import conv_bias, get_norm_layer


class SeparableConv2d(nn.Module):
    """k x k depthwise conv (one filter per channel), norm, 1x1 pointwise conv: (N, C_in, H, W) ->
    (N, C_out, H - k + 1, W - k + 1). C_in x k^2 + C_in x C_out multiply-adds per pixel instead of
    C_in x C_out x k^2.

    GAN Compression always puts an instance norm between the two convs; here it is the generator's
    norm, so a batch-norm student stays batch norm throughout (with instance norm, as in every GAN
    Compression CycleGAN, the keys and the function are the same).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str, bias: bool):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=bias),
            get_norm_layer(norm)(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias),
        )

    def forward(self, x):
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    """x + [pad, sep3x3, norm, relu, dropout, pad, sep3x3, norm](x), GAN Compression's
    `MobileResnetBlock`. The dropout slot is always there (an Identity without dropout) so the second
    separable conv sits at index 6 as in GAN Compression's checkpoints."""

    def __init__(self, dim: int, norm: str, dropout: bool, kernels: str = "torch"):
        super().__init__()
        if kernels != "torch":  # the fused Triton kernels implement the dense ResNet block only
            raise ValueError(f"the mobile ResNet block runs on torch layers, not kernels={kernels!r}")
        norm_layer, bias = get_norm_layer(norm), conv_bias(norm)
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, 3, norm, bias),
            norm_layer(dim),
            nn.ReLU(True),
            nn.Dropout(0.5) if dropout else nn.Identity(),
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, 3, norm, bias),
            norm_layer(dim),
        )

    def forward(self, x):  # (N, dim, H, W)
        return x + self.conv_block(x)


class MobileResnetGenerator(ResnetGenerator):
    """c7s1-ngf, d2ngf, d4ngf, n_blocks x mobile R4ngf, u2ngf, ungf, c7s1-3, tanh; H and W multiples of 4.

    ResnetGenerator's arguments (input_nc, output_nc, ngf, norm, dropout, n_blocks), on torch layers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs, kernels="torch", block=MobileResnetBlock)
