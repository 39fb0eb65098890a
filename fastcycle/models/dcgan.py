"""DCGAN (Radford et al. 2016) for 64x64 images, laid out as in pytorch/examples' dcgan (`main.<i>`).

All convolutions are 4x4. Convolutions have no bias, as in the example, except with norm="none", where
no normalisation follows them to absorb one.
"""

from torch import nn

from fastcycle.models.norms import get_norm_layer


class DCGANGenerator(nn.Module):
    """z (N, nz, 1, 1) -> 4x4 ngf*8 -> 8x8 ngf*4 -> 16x16 ngf*2 -> 32x32 ngf -> 64x64 nc, tanh.

    Each transposed convolution but the last is followed by the norm and a ReLU.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, norm: str = "batch"):
        super().__init__()
        self.nz = nz
        norm_layer = get_norm_layer(norm)
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, ngf * 8, kernel_size=4, stride=1, padding=0, bias=bias),
            norm_layer(ngf * 8),
            nn.ReLU(True),
        ]
        for mult in (8, 4, 2):
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=4, stride=2, padding=1, bias=bias
                ),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(ngf, nc, kernel_size=4, stride=2, padding=1, bias=bias), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):  # (N, nz, 1, 1) or (N, nz) -> (N, nc, 64, 64) in [-1, 1]
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    """(N, nc, 64, 64) -> 32x32 ndf (no norm) -> 16x16 ndf*2 -> 8x8 ndf*4 -> 4x4 ndf*8 -> one logit.

    LeakyReLU(0.2) after every convolution but the last. The output is a logit, without the example's
    sigmoid: the loss applies it (BCE with logits), which is numerically safer.
    """

    def __init__(self, nc: int = 3, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.Conv2d(nc, ndf, kernel_size=4, stride=2, padding=1, bias=bias),
            nn.LeakyReLU(0.2, True),
        ]
        for mult in (1, 2, 4):
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult * 2, kernel_size=4, stride=2, padding=1, bias=bias),
                norm_layer(ndf * mult * 2),
                nn.LeakyReLU(0.2, True),
            ]
        layers += [nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=1, padding=0, bias=bias)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):  # (N, nc, 64, 64) -> (N, 1, 1, 1) logits
        return self.main(x)
