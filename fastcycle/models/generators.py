"""ResNet generators of CycleGAN (Johnson et al. 2016 as adapted by Zhu et al. 2017).

The module tree mirrors junyanz/pytorch-CycleGAN-and-pix2pix exactly (`model.<i>`,
`model.<i>.conv_block.<j>`), so reference state dicts load without renaming. With kernels="triton"
the pad/conv and norm/ReLU pairs run fused (fastcycle.models.fused) in the same slots.
"""

from torch import nn

from fastcycle.models.fused import FusedInstanceNorm2d, check_kernels, norm_relu, reflect_conv
from fastcycle.models.norms import conv_bias, get_norm_layer


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, relu, (dropout), pad, conv3x3, norm](x)."""

    def __init__(self, dim: int, norm: str, dropout: bool, kernels: str = "torch"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            *reflect_conv(1, dim, dim, 3, bias, kernels),
            *norm_relu(norm_layer, norm, dim, kernels),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        # The residual add rides in the last norm's pass when that norm is fused.
        self.fused_residual = kernels == "triton" and norm == "instance"
        last_norm = FusedInstanceNorm2d(dim) if self.fused_residual else norm_layer(dim)
        layers += [*reflect_conv(1, dim, dim, 3, bias, kernels), last_norm]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):  # (N, dim, H, W)
        if self.fused_residual:
            *body, last_norm = self.conv_block
            h = x
            for layer in body:
                h = layer(h)
            return last_norm(h, residual=x)
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, ungf, c7s1-3, tanh.

    Input height and width must be multiples of 4 (two stride-2 downsamplings); outputs are in [-1, 1].
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        norm: str = "instance",
        dropout: bool = False,
        n_blocks: int = 9,
        kernels: str = "torch",
        block: type[nn.Module] = ResnetBlock,
    ):
        """block: the residual block class, called as block(dim, norm, dropout, kernels); the mobile
        generator (fastcycle.models.mobile) passes its depthwise-separable one."""
        super().__init__()
        check_kernels(kernels)
        norm_layer = get_norm_layer(norm)
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            *reflect_conv(3, input_nc, ngf, 7, bias, kernels),
            *norm_relu(norm_layer, norm, ngf, kernels),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            c = ngf * 2**i
            layers += [
                nn.Conv2d(c, c * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                *norm_relu(norm_layer, norm, c * 2, kernels),
            ]
        dim = ngf * 2**n_downsampling
        layers += [block(dim, norm, dropout, kernels) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            c = ngf * 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(
                    c, c // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                *norm_relu(norm_layer, norm, c // 2, kernels),
            ]
        layers += [*reflect_conv(3, ngf, output_nc, 7, True, kernels), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):  # (N, input_nc, H, W) in [-1, 1] -> (N, output_nc, H, W)
        return self.model(x)
