"""ResNet generators of CycleGAN (Johnson et al. 2016 as adapted by Zhu et al. 2017).

The module tree mirrors junyanz/pytorch-CycleGAN-and-pix2pix exactly (`model.<i>`,
`model.<i>.conv_block.<j>`), so reference state dicts load without renaming.
"""

from torch import nn

from fastcycle.models.norms import conv_bias, get_norm_layer


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, relu, (dropout), pad, conv3x3, norm](x)."""

    def __init__(self, dim: int, norm: str, dropout: bool):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
            norm_layer(dim),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):  # (N, dim, H, W)
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
    ):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            c = ngf * 2**i
            layers += [
                nn.Conv2d(c, c * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                norm_layer(c * 2),
                nn.ReLU(True),
            ]
        dim = ngf * 2**n_downsampling
        layers += [ResnetBlock(dim, norm, dropout) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            c = ngf * 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(
                    c, c // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                norm_layer(c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):  # (N, input_nc, H, W) in [-1, 1] -> (N, output_nc, H, W)
        return self.model(x)
