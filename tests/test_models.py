"""Architecture facts and reference state-dict parity, in both directions."""

import pytest
import torch

from fastcycle.checkpoint import load_weights
from fastcycle.errors import UserError
from fastcycle.models import build_discriminator, build_generator
from fastcycle.models.norms import get_norm_layer
from tests import reference
from tests.tolerance import assert_close_in_net, network_atol

CASES = [  # (facts entry, builder, kwargs, oracle)
    (
        "G resnet_9blocks (norm=instance)",
        build_generator,
        dict(name="resnet_9blocks"),
        lambda sd, x: reference.resnet_generator(sd, x, 9),
    ),
    (
        "G resnet_6blocks (norm=instance)",
        build_generator,
        dict(name="resnet_6blocks"),
        lambda sd, x: reference.resnet_generator(sd, x, 6),
    ),
    (
        "G resnet_9blocks (norm=batch)",
        build_generator,
        dict(name="resnet_9blocks", norm="batch"),
        lambda sd, x: reference.resnet_generator(sd, x, 9, norm="batch"),
    ),
    (
        "G unet_256 (norm=instance)",
        build_generator,
        dict(name="unet_256"),
        lambda sd, x: reference.unet_generator(sd, x, 8),
    ),
    (
        "G unet_128 (norm=instance)",
        build_generator,
        dict(name="unet_128"),
        lambda sd, x: reference.unet_generator(sd, x, 7),
    ),
    (
        "D basic, n_layers=3 (norm=instance)",
        build_discriminator,
        dict(name="basic"),
        reference.basic_discriminator,
    ),
    (
        "D basic, n_layers=3 (norm=batch)",
        build_discriminator,
        dict(name="basic", norm="batch"),
        lambda sd, x: reference.basic_discriminator(sd, x, norm="batch"),
    ),
    (
        "D pixel (norm=instance)",
        build_discriminator,
        dict(name="pixel"),
        reference.pixel_discriminator,
    ),
]
IDS = [c[0] for c in CASES]
# Forward-parity input side: 32 unless a network needs more. A U-Net halves its input num_downs times
# and instance-normalises the map before the 1x1 bottleneck, which needs at least 2x2 pixels.
INPUT_SIZE = {"G unet_256 (norm=instance)": 256, "G unet_128 (norm=instance)": 128}


@pytest.mark.parametrize(("name", "build", "kw", "oracle"), CASES, ids=IDS)
def test_parameter_count_and_state_dict_layout(name, build, kw, oracle):
    net = build(**kw)
    facts = reference.facts(name)
    assert sum(p.numel() for p in net.parameters()) == facts["params"]
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == facts["state_dict"]


def test_documented_parameter_counts():
    assert sum(p.numel() for p in build_generator("resnet_9blocks").parameters()) == 11_378_179
    assert sum(p.numel() for p in build_generator("resnet_6blocks").parameters()) == 7_837_699
    assert sum(p.numel() for p in build_discriminator("basic").parameters()) == 2_764_737
    assert sum(p.numel() for p in build_generator("unet_256").parameters()) == 54_409_603
    assert sum(p.numel() for p in build_generator("unet_128").parameters()) == 41_825_667
    assert sum(p.numel() for p in build_discriminator("pixel").parameters()) == 8_705


@pytest.mark.parametrize(("name", "build", "kw", "oracle"), CASES, ids=IDS)
def test_reference_weights_load_and_match(name, build, kw, oracle):
    """Reference -> fastcycle: a reference-layout state dict gives the reference's outputs."""
    sd = reference.random_state_dict(name)
    net = load_weights(build(**kw), sd, "reference").eval()
    size = INPUT_SIZE.get(name, 32)
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        got, want = net(x), oracle(sd, x)
    # fp32 on both sides; the two differ in the order of their sums only (eval-mode instance norm runs
    # torch's group-norm kernel, the oracle instance_norm's): tests/tolerance.py.
    assert_close_in_net(got, want, net, x)


@pytest.mark.parametrize(("name", "build", "kw", "oracle"), CASES, ids=IDS)
def test_fastcycle_weights_run_in_reference(name, build, kw, oracle, tmp_path):
    """fastcycle -> reference: our state dict, saved as the reference saves it, is a reference state dict."""
    torch.manual_seed(1)
    net = build(**kw).eval()
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(net.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    size = INPUT_SIZE.get(name, 32)
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        got, want = oracle(sd, x), net(x)
    assert_close_in_net(got, want, net, x)  # as above: summation order only


def test_old_reference_instance_norm_statistics_are_dropped():
    """PyTorch < 0.4 saved running stats for InstanceNorm; the reference's test.py patches them out."""
    sd = reference.random_state_dict("G resnet_6blocks (norm=instance)")
    stale = dict(sd)
    for key in ("model.2", "model.10.conv_block.2", "model.20"):
        stale[f"{key}.running_mean"] = torch.zeros(1)
        stale[f"{key}.running_var"] = torch.ones(1)
        stale[f"{key}.num_batches_tracked"] = torch.tensor(3)
    stale = {f"module.{k}": v for k, v in stale.items()}  # as saved from DataParallel
    net = load_weights(build_generator("resnet_6blocks"), stale, "old.pth").eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        got, want = net(x), reference.resnet_generator(sd, x, 6)
    assert_close_in_net(got, want, net, x)  # summation order only


def test_wrong_architecture_is_one_clear_error():
    sd = reference.random_state_dict("G resnet_9blocks (norm=instance)")
    with pytest.raises(UserError, match=r"does not fit this network: .*unexpected.*--netG"):
        load_weights(build_generator("resnet_6blocks"), sd, "g.pth")
    with pytest.raises(UserError, match="other shape"):
        load_weights(build_generator("resnet_9blocks", ngf=32), sd, "g.pth")


def test_architecture_details():
    g = build_generator("resnet_6blocks", ngf=8)
    mods = list(g.model)
    assert isinstance(mods[0], torch.nn.ReflectionPad2d) and mods[0].padding == (3, 3, 3, 3)
    assert isinstance(mods[-1], torch.nn.Tanh)
    convt = [m for m in mods if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convt) == 2 and all(m.output_padding == (1, 1) for m in convt)
    norms = [m for m in g.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    # bias only with instance norm (and on the last conv, which has no norm after it)
    gb = build_generator("resnet_6blocks", ngf=8, norm="batch")
    convs = [m for m in gb.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert [m.bias is not None for m in convs] == [False] * (len(convs) - 1) + [True]
    gd = build_generator("resnet_6blocks", ngf=8, dropout=True)
    assert sum(isinstance(m, torch.nn.Dropout) for m in gd.modules()) == 6
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1


def test_n_layers_discriminator_receptive_field_shapes():
    d = build_discriminator("n_layers", ndf=8, n_layers=5)
    assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 6, 6)
    assert build_discriminator("basic", ndf=8)(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types(init_type):
    torch.manual_seed(0)
    g = build_generator("resnet_6blocks", ngf=16, norm="batch", init_type=init_type, init_gain=0.02)
    w = g.model[10].conv_block[1].weight
    fan_in = w[0].numel()
    expected_std = {
        "normal": 0.02,
        "xavier": 0.02 * (2 / (2 * fan_in)) ** 0.5,
        "kaiming": (2 / fan_in) ** 0.5,
        "orthogonal": None,
    }[init_type]
    if expected_std is not None:
        # 147k samples: the empirical std is within 2% of the target with overwhelming probability.
        assert abs(w.std().item() / expected_std - 1) < 0.02
    bn = g.model[2]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and bn.bias.abs().max() == 0
    assert all(
        m.bias is None or m.bias.abs().max() == 0 for m in g.modules() if isinstance(m, torch.nn.Conv2d)
    )


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator("resnet_5blocks")
    with pytest.raises(ValueError, match="unknown norm"):
        build_discriminator("basic", norm="group")


def _aten_ops(fn) -> set[str]:
    """The aten ops `fn()` dispatches (after autograd), by name."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return seen


def test_instance_norm_inference_form_is_instance_norm():
    """Eager CPU inference takes torch's group-norm kernel with one group per channel: the same
    per-(image, channel) mean and biased variance, so the output differs from instance_norm's only by
    summation order (tests/tolerance.py, over a 16 x 12 plane), in both layouts. Training, which needs the
    reference's backward, and traced graphs (exported as InstanceNormalization) keep instance_norm."""
    norm = get_norm_layer("instance")(8)
    x = torch.randn(3, 8, 16, 12) * 3 + 1
    want = torch.nn.functional.instance_norm(x, eps=norm.eps)
    tol = network_atol(norm, x)
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad():
            got = norm(x.contiguous(memory_format=layout))
        torch.testing.assert_close(got, want, atol=tol, rtol=0)
    with torch.no_grad():
        assert "native_group_norm" in _aten_ops(lambda: norm(x))
    trained = x.clone().requires_grad_()
    assert "native_group_norm" not in _aten_ops(lambda: norm(trained).sum().backward())
    # The gradient of the sum of a normed plane is zero: what is left is the rounding of that sum.
    torch.testing.assert_close(trained.grad, torch.zeros_like(x), atol=tol, rtol=0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), norm).eval()
    with torch.no_grad():
        graph = torch.export.export(net, (torch.randn(1, 3, 10, 10),)).graph
    assert {str(n.target) for n in graph.nodes} >= {"aten.instance_norm.default"}


def test_torch_runner_matches_the_eager_generator():
    """translate's torch runner computes what the generator computes (in channels-last on CPU, where
    oneDNN's convolutions sum in another order: tests/tolerance.py), and returns NCHW-shaped fp32."""
    from fastcycle.runner import TorchRunner

    torch.manual_seed(0)
    net = build_generator("mobile_resnet_6blocks", ngf=8).eval()
    x = torch.rand(2, 3, 32, 36) * 2 - 1
    want = net(x).detach()  # autograd on: the reference form, instance_norm in NCHW
    runner = TorchRunner(net, torch.device("cpu"))
    got = runner(x)
    assert got.shape == want.shape and got.dtype == torch.float32 and "channels-last" in runner.note
    torch.testing.assert_close(got, want, atol=network_atol(net, x), rtol=0)


def test_instance_norm_inference_stays_exact_on_large_channels_last_planes():
    """A 512 x 512 plane whose mean is 5 times its spread: torch's channels-last group-norm kernel alone
    is off by 7.2e-4 there (float32 sums of x and x^2 cancel); with the mean taken off first the
    result is within 5e-4 of float64 instance norm (measured 5.4e-5; 8-bit output steps are 7.8e-3)."""
    norm = get_norm_layer("instance")(8)
    torch.manual_seed(0)
    x = (torch.randn(1, 8, 512, 512) + 5).contiguous(memory_format=torch.channels_last)
    want = torch.nn.functional.instance_norm(x.double(), eps=norm.eps)
    with torch.no_grad():
        got = norm(x)
        raw = torch.nn.functional.group_norm(x, 8, eps=norm.eps)
    assert got.is_contiguous(memory_format=torch.channels_last)  # the layout the next conv wants
    assert (got.double() - want).abs().max() < 5e-4
    assert (raw.double() - want).abs().max() > 5e-4  # the kernel alone fails this bound: the test can fail
