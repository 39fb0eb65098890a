"""PatchGAN discriminators (Isola et al. 2017): each output logit judges one receptive-field patch."""

from torch import nn

from fastcycle.models.norms import conv_bias, get_norm_layer


class NLayerDiscriminator(nn.Module):
    """C64 (no norm) - C128 - C256 - C512 (stride 1) - C1, 4x4 kernels, LeakyReLU(0.2).

    n_layers=3 is the reference's `basic` discriminator with 70x70 receptive fields.

    n_classes > 0 adds an auxiliary classification head for semi-supervised CycleGAN (not in the
    reference): `cls` = global average pool + linear over the trunk's features (the output of the last
    LeakyReLU), and forward returns (patch_logits, class_logits of shape (N, n_classes)). With
    n_classes=0 the module, its keys and its forward are exactly the reference's.
    """

    def __init__(
        self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance", n_classes: int = 0
    ):
        super().__init__()
        if n_classes < 0:
            raise ValueError(f"n_classes must be >= 0, got {n_classes}")
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
        self.cls = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ndf * mult, n_classes))
            if n_classes > 0
            else None
        )

    def forward(self, x):  # (N, input_nc, H, W) -> (N, 1, H', W') patch logits [, (N, n_classes)]
        if self.cls is None:
            return self.model(x)
        *trunk, head = self.model
        for layer in trunk:
            x = layer(x)
        return head(x), self.cls(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN ("pixelGAN"): C64 (no norm) - C128 - C1 with 1x1 kernels, one logit per pixel."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, stride=1, padding=0, bias=bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, stride=1, padding=0, bias=bias),
        )

    def forward(self, x):  # (N, input_nc, H, W) -> (N, 1, H, W) per-pixel logits
        return self.net(x)
