"""PatchGAN discriminators (Isola et al. 2017): each output logit judges one receptive-field patch."""

from torch import nn

from fastcycle.models.norms import conv_bias, get_norm_layer


class NLayerDiscriminator(nn.Module):
    """C64 (no norm) - C128 - C256 - C512 (stride 1) - C1, 4x4 kernels, LeakyReLU(0.2).

    n_layers=3 is the reference's `basic` discriminator with 70x70 receptive fields.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias(norm)
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=2, padding=padw, bias=bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=1, padding=padw, bias=bias),
            norm_layer(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x):  # (N, input_nc, H, W) -> (N, 1, H', W') patch logits
        return self.model(x)
