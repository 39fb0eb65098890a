"""The architectures beyond the ResNet/PatchGAN pair: U-Net, pixel and DCGAN networks, the auxiliary
classification head, and the builders' name checks."""

import pytest
import torch

from fastcycle.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    NLayerDiscriminator,
    UnetGenerator,
    build_discriminator,
    build_generator,
)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_dcgan_shapes(norm):
    torch.manual_seed(0)
    g = build_generator("dcgan", ngf=8, norm=norm, nz=16)
    d = build_discriminator("dcgan", ndf=8, norm=norm)
    assert isinstance(g, DCGANGenerator) and isinstance(d, DCGANDiscriminator) and g.nz == 16
    z = torch.randn(3, 16)
    y4, y2 = g(z[:, :, None, None]), g(z)
    assert y4.shape == (3, 3, 64, 64) and y4.abs().max() <= 1
    assert torch.equal(y4, y2)  # same noise, same mode: the (N, nz) form is only a reshape
    assert d(y4).shape == (3, 1, 1, 1)
    convs = [
        m for m in [*g.modules(), *d.modules()] if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    assert len(convs) == 10 and all((m.bias is not None) == (norm == "none") for m in convs)


def test_dcgan_layout():
    g, d = DCGANGenerator(), DCGANDiscriminator()
    g_keys = [k for k in g.state_dict() if k.endswith("weight")]
    d_keys = [k for k in d.state_dict() if k.endswith("weight")]
    # pytorch/examples' dcgan: conv/BN pairs at these `main` indices
    assert g_keys == [f"main.{i}.weight" for i in (0, 1, 3, 4, 6, 7, 9, 10, 12)]
    assert d_keys == [f"main.{i}.weight" for i in (0, 2, 3, 5, 6, 8, 9, 11)]
    assert g.main[0].weight.shape == (100, 512, 4, 4) and d.main[-1].weight.shape == (1, 512, 4, 4)
    assert isinstance(g.main[-1], torch.nn.Tanh) and isinstance(d.main[-1], torch.nn.Conv2d)


@pytest.mark.parametrize("n_layers", [3, 4])
def test_auxiliary_classifier_head(n_layers):
    torch.manual_seed(0)
    name = "basic" if n_layers == 3 else "n_layers"
    plain = build_discriminator(name, ndf=8, n_layers=n_layers).eval()
    aux = build_discriminator(name, ndf=8, n_layers=n_layers, n_classes=3).eval()
    plain_sd, aux_sd = plain.state_dict(), aux.state_dict()
    assert {k for k in aux_sd if k not in plain_sd} == {"cls.2.weight", "cls.2.bias"}
    assert {k: v.shape for k, v in aux_sd.items() if k in plain_sd} == {
        k: v.shape for k, v in plain_sd.items()
    }
    assert aux.cls[2].in_features == 8 * min(2**n_layers, 8)
    aux.load_state_dict({**aux_sd, **plain_sd})
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        patch, logits = aux(x)
        assert logits.shape == (2, 3)
        assert torch.equal(patch, plain(x))  # same weights, same layers run in the same order
        assert torch.equal(logits, aux.cls(aux.model[:-1](x)))  # the head reads the last LeakyReLU's output


def test_auxiliary_classifier_head_runs_the_trunk_once():
    d = NLayerDiscriminator(ndf=8, n_classes=2)
    calls = []
    d.model[0].register_forward_hook(lambda *_: calls.append(1))
    d(torch.rand(1, 3, 32, 32))
    assert calls == [1]


def test_auxiliary_classifier_head_trains():
    torch.manual_seed(0)
    d = build_discriminator("basic", ndf=8, norm="batch", n_classes=4)
    patch, logits = d(torch.rand(2, 3, 32, 32))
    (patch.mean() + torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3]))).backward()
    assert d.cls[2].weight.grad.abs().sum() > 0 and d.model[0].weight.grad.abs().sum() > 0


def test_size_multiples():
    assert build_generator("unet_256", ngf=4).spec.size_multiple == 256
    assert build_generator("unet_128", ngf=4).spec.size_multiple == 128
    assert build_generator("resnet_6blocks", ngf=4).spec.size_multiple == 4
    assert build_generator("mobile_resnet_6blocks", ngf=4).spec.size_multiple == 4
    assert build_generator("dcgan", ngf=4).spec.size_multiple is None  # noise in, no image size


@pytest.mark.parametrize("name", ["unet_128", "resnet_6blocks"])
def test_the_size_multiple_is_what_the_network_takes(name):
    """At multiples of spec.size_multiple the output has the input's shape; half a multiple more, not
    (the U-Net's skip concatenation fails, the ResNet's upsampling overshoots)."""
    g = build_generator(name, ngf=2, norm="batch").eval()
    m = g.spec.size_multiple
    side = max(m, 16)  # a multiple of m whose H/4 leaves the ResNet blocks' reflect padding room
    with torch.no_grad():
        assert g(torch.zeros(1, 3, side, 2 * side)).shape == (1, 3, side, 2 * side)
        try:
            shape = g(torch.zeros(1, 3, side + m // 2, side)).shape
        except RuntimeError:
            shape = None
    assert shape != (1, 3, side + m // 2, side)


def test_unet_batch_norm_dropout_trains_at_256():
    torch.manual_seed(0)
    g = build_generator("unet_256", ngf=8, norm="batch", dropout=True).train()
    assert isinstance(g, UnetGenerator)
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 3  # num_downs - 5
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    # With batch norm only the outermost up conv (it feeds tanh, not a norm) has a bias, as in the reference.
    assert [m.bias is not None for m in convs].count(True) == 1 and convs[-1].bias is not None
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    y.mean().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_unet_instance_norm_trains():
    torch.manual_seed(0)
    g = UnetGenerator(num_downs=5, ngf=4)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    g(x).square().mean().backward()  # the in-place LeakyReLUs must not break autograd
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


def test_pixel_discriminator_is_per_pixel():
    d = build_discriminator("pixel", ndf=8)
    assert d(torch.rand(2, 3, 12, 20)).shape == (2, 1, 12, 20)


def test_builders_reject_bad_names():
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator("unet_64")
    with pytest.raises(ValueError, match="unknown discriminator"):
        build_discriminator("patch")
    with pytest.raises(ValueError, match="unknown norm"):
        build_generator("unet_128", norm="layer")
    with pytest.raises(ValueError, match="unknown kernels"):
        build_generator("unet_128", kernels="cuda")
    for name in ("pixel", "dcgan"):
        with pytest.raises(ValueError, match="no classification head"):
            build_discriminator(name, n_classes=3)
    with pytest.raises(ValueError, match="n_classes"):
        build_discriminator("basic", n_classes=-1)
