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
from fastcycle.runtime import resolve_kernels
from fastcycle.train import CycleGAN
from fastcycle.train.cyclegan import LOSS_NAMES
from tests import reference
from tests.conftest import DEVICE
from tests.test_train import model_env, tiny
from tests.tolerance import assert_close_in_net, assert_same_gradients, cycle_step_atol


def _pair(norm="instance", **kw):
    torch.manual_seed(0)
    eager = build_generator("resnet_6blocks", ngf=4, norm=norm, **kw).to(DEVICE)
    fused = build_generator("resnet_6blocks", ngf=4, norm=norm, kernels="triton", **kw).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


@pytest.mark.parametrize("blocks", [9, 6])
def test_fused_generator_has_the_reference_keys_and_outputs(blocks):
    name = f"G resnet_{blocks}blocks (norm=instance)"
    torch.manual_seed(0)  # fixed draws: the result must not depend on which tests ran before
    net = build_generator(f"resnet_{blocks}blocks", kernels="triton")
    facts = reference.facts(name)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == facts["state_dict"]
    kinds = {type(m) for m in net.modules()}
    assert {ReflectConv2d, FusedInstanceNorm2d} <= kinds and torch.nn.ReflectionPad2d not in kinds
    if blocks == 9:
        return  # the outputs below: the six-block network has every layer shape of the nine-block one
    # Reference weights -> the fused network gives the reference's outputs (the independent oracle).
    sd = reference.random_state_dict(name)
    net = load_weights(net, sd, "reference").eval().to(DEVICE)
    x = torch.rand(1, 3, 8, 8) * 2 - 1  # full width, tiny image: the interpreter's cost is per tile
    with torch.no_grad():
        got = net(x.to(DEVICE)).cpu()
    twin = build_generator(f"resnet_{blocks}blocks")  # the same layers on torch's ops, for the tolerance
    assert_close_in_net(got, reference.resnet_generator(sd, x, blocks), twin, x)


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
    # fp32 on both sides, the kernels summing in other orders than torch's (tests/tolerance.py).
    assert_close_in_net(outs[1][0], outs[0][0], eager, x)
    assert_close_in_net(outs[1][1], outs[0][1], eager, x, backward=True)
    assert_same_gradients(eager, fused, x)


LOCKSTEP_STEPS = 4


def test_training_steps_on_real_batches_give_the_same_losses_and_gradients(dataset, tmp_path):
    # Lockstep: before every step the fused model takes the eager one's whole state (weights, Adam
    # moments, pools) and the same RNG state, so each step's difference is the kernels' alone. Letting
    # the two runs drift instead measures the GAN's chaos, not the kernels: a tiny net's instance norm
    # over a near-constant plane amplifies a 3e-6 difference to 3e-4 in one step. Step 1 starts from
    # zero Adam moments and empty image pools, the later ones from moments and pools the steps filled;
    # more steps would only sample more batches of the same code.
    cfg = tiny(data=str(dataset), crop_size=16, load_size=20, batch_size=1, lr=2e-4)
    torch.manual_seed(0)
    eager, fused = (CycleGAN(cfg, model_env(DEVICE, kernels=k)) for k in ("torch", "triton"))
    scans = [scan_domain(dataset, d) for d in ("trainA", "trainB")]
    spec = LoaderSpec(*scans, "resize_and_crop", 20, 16, True, False, 0, 1, DEVICE, False)
    loader, _ = build_loader(DataConfig(data=str(dataset), loader="torch", num_workers=0), spec, tmp_path)
    batches = list(loader.epoch(0))[:LOCKSTEP_STEPS]
    assert len(batches) == LOCKSTEP_STEPS
    for step, batch in enumerate(batches, 1):
        fused.load_state_dict(eager.state_dict())
        rng = torch.get_rng_state()
        want, _ = eager.train_step(batch.A, batch.B)
        torch.set_rng_state(rng)
        got, _ = fused.train_step(batch.A, batch.B)
        assert set(want) == set(LOSS_NAMES)
        tol = cycle_step_atol(eager.nets, batch.A, len(want))  # one step from the same state
        for k, v in want.items():
            torch.testing.assert_close(got[k], v, atol=tol, rtol=tol, msg=f"step {step}: {k}")
        # The generators' gradients of that step (zeroed at the start of the next one).
        for name in ("G_AB", "G_BA"):
            assert_same_gradients(eager.nets[name], fused.nets[name], batch.A)


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
