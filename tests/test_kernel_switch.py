"""`--kernels triton` against `--kernels torch`: same keys, same outputs, same gradients, same training.

On a CPU the kernels run under Triton's interpreter (tests/conftest.py), so the models here are tiny.
"""

import numpy as np
import pytest
import torch

from fastcycle.checkpoint import load_weights
from fastcycle.config import DataConfig
from fastcycle.data.contract import LoaderSpec
from fastcycle.data.loader import build_loader
from fastcycle.data.scan import scan_domain
from fastcycle.errors import UserError
from fastcycle.models import build_generator
from fastcycle.models.fused import FusedInstanceNorm2d, ReflectConv2d
from fastcycle.runtime import resolve_kernels, resolve_precision
from fastcycle.train import CycleGAN
from fastcycle.train.step import LOSS_NAMES
from tests import reference
from tests.conftest import DEVICE
from tests.test_train import tiny

# fp32 through a dozen fused layers: per-layer differences are summation order (~1e-6 relative),
# compounded through the network's depth.
FP32_NET = dict(atol=1e-4, rtol=1e-3)


def _pair(norm="instance", **kw):
    torch.manual_seed(0)
    eager = build_generator("resnet_6blocks", ngf=4, norm=norm, **kw).to(DEVICE)
    fused = build_generator("resnet_6blocks", ngf=4, norm=norm, kernels="triton", **kw).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def test_fused_generator_has_the_reference_keys_and_outputs():
    name = "G resnet_9blocks (norm=instance)"
    torch.manual_seed(0)  # fixed draws: the result must not depend on which tests ran before
    net = build_generator("resnet_9blocks", kernels="triton")
    facts = reference.facts(name)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == facts["state_dict"]
    kinds = {type(m) for m in net.modules()}
    assert {ReflectConv2d, FusedInstanceNorm2d} <= kinds and torch.nn.ReflectionPad2d not in kinds
    # Reference weights -> the fused network gives the reference's outputs (the independent oracle).
    sd = reference.random_state_dict(name)
    net = load_weights(net, sd, "reference").eval().to(DEVICE)
    x = torch.rand(1, 3, 8, 8) * 2 - 1  # full width, tiny image: the interpreter's cost is per tile
    with torch.no_grad():
        got = net(x.to(DEVICE)).cpu()
    torch.testing.assert_close(got, reference.resnet_generator(sd, x, 9), **FP32_NET)


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fused_generator_matches_eager_outputs_and_gradients(norm, channels_last):
    eager, fused = _pair(norm)
    x = torch.rand(2, 3, 20, 28, device=DEVICE) * 2 - 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        eager, fused = (n.to(memory_format=torch.channels_last) for n in (eager, fused))
    grad_out = torch.randn(2, 3, 20, 28, device=DEVICE)
    outs = []
    for net in (eager, fused):
        xi = x.clone().requires_grad_()
        y = net(xi)
        y.backward(grad_out)
        outs.append((y.detach(), xi.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], **FP32_NET)
    torch.testing.assert_close(outs[1][1], outs[0][1], **FP32_NET)
    _same_grads(eager, fused)


def _same_grads(eager, fused):
    # Relative to the network's largest gradient: the biases in front of instance norm have a true
    # gradient of exactly zero (the mean subtraction removes them), so theirs is rounding noise on
    # both sides, and a per-tensor relative tolerance would compare noise with noise.
    scale = max(p.grad.abs().max().item() for p in eager.parameters())
    for (key, p_eager), p_fused in zip(eager.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p_fused.grad, p_eager.grad, atol=1e-5 * scale, rtol=1e-3, msg=key)


def _model(kernels):
    cfg = tiny(crop_size=16, load_size=16)
    return CycleGAN(cfg, DEVICE, resolve_precision(False, "auto", DEVICE), kernels)


def test_a_training_step_is_the_same_with_fused_kernels():
    eager, fused = _model("torch"), _model("triton")
    fused.load_state_dict(eager.state_dict())
    g = torch.Generator().manual_seed(0)
    real_A, real_B = (torch.rand(2, 3, 16, 16, generator=g).to(DEVICE) * 2 - 1 for _ in range(2))
    losses_eager, _ = eager.train_step(real_A, real_B)
    losses_fused, _ = fused.train_step(real_A, real_B)
    for k, v in losses_eager.items():
        torch.testing.assert_close(losses_fused[k], v, **FP32_NET, msg=k)
    # The generators' gradients of that step (zeroed at the start of the next one).
    for name in ("G_AB", "G_BA"):
        _same_grads(eager.nets[name], fused.nets[name])


@pytest.mark.slow
def test_twenty_training_steps_on_real_batches_give_the_same_losses(dataset, tmp_path):
    # Lockstep: before every step the fused model takes the eager one's whole state (weights, Adam
    # moments, pools) and the same RNG state, so each step's difference is the kernels' alone. Letting
    # the two runs drift instead measures the GAN's chaos, not the kernels: a tiny net's instance norm
    # over a near-constant plane amplifies a 3e-6 difference to 3e-4 in one step.
    cfg = tiny(data=str(dataset), crop_size=16, load_size=20, batch_size=1, lr=2e-4)
    precision = resolve_precision(False, "auto", DEVICE)
    torch.manual_seed(0)
    eager, fused = CycleGAN(cfg, DEVICE, precision, "torch"), CycleGAN(cfg, DEVICE, precision, "triton")
    scans = [scan_domain(dataset, d) for d in ("trainA", "trainB")]
    spec = LoaderSpec(*scans, "resize_and_crop", 20, 16, True, False, 0, 1, DEVICE, False)
    loader, _ = build_loader(DataConfig(data=str(dataset), loader="torch", num_workers=0), spec, tmp_path)
    batches = [b for epoch in range(4) for b in loader.epoch(epoch)][:20]
    worst = 0.0
    for batch in batches:
        fused.load_state_dict(eager.state_dict())
        rng = torch.get_rng_state()
        want, _ = eager.train_step(batch.A, batch.B)
        torch.set_rng_state(rng)
        got, _ = fused.train_step(batch.A, batch.B)
        worst = max(worst, *((got[k] - want[k]).abs().item() for k in want))
    assert len(batches) == 20 and set(want) == set(LOSS_NAMES)
    # Observed: at most 2.4e-6 (fp32 summation order through two generators and a discriminator).
    assert worst <= 2e-5


def test_kernel_switch_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_kernels("torch", cpu)[0] == "torch"
    assert resolve_kernels("auto", cpu)[0] == "torch"  # auto picks Triton on CUDA only
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_kernels("triton", cpu)[0] == "triton"  # how these tests run the kernels on a CPU
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(UserError, match="--kernels triton needs a CUDA GPU"):
        resolve_kernels("triton", cpu)


def test_translate_with_fused_kernels_writes_the_same_images(tmp_path):
    from PIL import Image

    from fastcycle.cli import main
    from tests.conftest import write_images

    torch.save(build_generator("resnet_6blocks", ngf=4).state_dict(), tmp_path / "g.pth")
    write_images(tmp_path / "in", 2, size=(24, 20))
    arch = ("--netG", "resnet_6blocks", "--ngf", "4", "--device", DEVICE.type)
    for kernels in ("torch", "triton"):
        args = ["translate", "--checkpoint", str(tmp_path / "g.pth"), "--input", str(tmp_path / "in")]
        assert main([*args, "--output", str(tmp_path / kernels), *arch, "--kernels", kernels]) == 0
    for name in ("img_000.png", "img_001.png"):
        a, b = (
            torch.from_numpy(np.array(Image.open(tmp_path / k / name))).int() for k in ("torch", "triton")
        )
        assert (a - b).abs().max() <= 1  # fp32 outputs that agree to ~1e-6 can still round to adjacent levels
