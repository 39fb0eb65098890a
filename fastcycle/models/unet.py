"""U-Net generators of pix2pix (Isola et al. 2017): an encoder-decoder with skip connections.

The module tree mirrors junyanz/pytorch-CycleGAN-and-pix2pix exactly: each block is a
`UnetSkipConnectionBlock` whose `model` holds its down path, the next block inward, and its up path, so
the keys nest as `model.model.1.model.3.model.3...` and reference state dicts load without renaming.
"""

import torch
from torch import nn

from fastcycle.models.norms import conv_bias, get_norm_layer


class UnetSkipConnectionBlock(nn.Module):
    """x -> cat([x, up(submodule(down(x)))]), or up(submodule(down(x))) for the outermost block.

    down = LeakyReLU(0.2), conv4x4/2, norm (outermost: the conv alone; innermost: no norm);
    up = ReLU, transposed conv4x4/2, norm (outermost: tanh instead of the norm, and a conv bias).
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "instance",
        dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        norm_layer = get_norm_layer(norm)
        bias = conv_bias(norm)
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, norm_layer(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [
                nn.LeakyReLU(0.2, True),
                downconv,
                norm_layer(inner_nc),
                submodule,
                nn.ReLU(True),
                upconv,
                norm_layer(outer_nc),
            ]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):  # (N, outer_nc, H, W) -> (N, 2 * outer_nc, H, W); outermost: -> (N, outer_nc, H, W)
        if self.outermost:
            return self.model(x)
        # The in-place LeakyReLU rewrites x before the concatenation, as in the reference; harmless,
        # since the parent's up path starts with a ReLU and ReLU(LeakyReLU(x)) = ReLU(x).
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """num_downs stride-2 downsamplings to a 1x1 bottleneck and back, with skip connections.

    unet_256 is num_downs=8, unet_128 num_downs=7. Input height and width must be multiples of
    2**num_downs; with instance norm they must also be at least 2**num_downs, since the
    innermost norm needs more than one pixel. Outputs are in [-1, 1]. With dropout, the num_downs - 5
    middle ngf*8 blocks end in Dropout(0.5), as in the reference.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "instance",
        dropout: bool = False,
    ):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs num_downs >= 5, got {num_downs}")
        self.num_downs = num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, dropout=dropout)
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )

    def forward(self, x):  # (N, input_nc, H, W) in [-1, 1] -> (N, output_nc, H, W)
        return self.model(x)
