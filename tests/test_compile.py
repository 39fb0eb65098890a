"""torch.compile on the CPU with Inductor, as `--compile` runs it (`fullgraph=True`, static shapes).

Every network of every family traces as one graph (so `fullgraph=True` can never fail in a run); a
compiled CycleGAN step compiles each network once per batch shape and never again, and its losses are
eager's; the fused Triton kernels (custom ops, run by Triton's interpreter here) trace too, and their
fake implementations state the shapes, dtypes and strides the kernels write.

Cost: Inductor compiles C++ for every graph, forward and backward. On two cores with an empty cache
(a fresh CI machine) the two Inductor tests take about 2-3 minutes; graph tracing alone (explain) is
seconds. Inductor's cache (/tmp/torchinductor_$USER) makes a second run far faster.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters
from torch._subclasses.fake_tensor import FakeTensorMode

from fastcycle.kernels.instance_norm import _instance_norm_backward_op, _instance_norm_op
from fastcycle.kernels.reflect_conv import _reflect_conv_op
from fastcycle.models import build_discriminator, build_generator
from fastcycle.train import CycleGAN
from tests.test_train import _batch, model_env, tiny
from tests.tolerance import assert_close_in_net, assert_same_gradients, cycle_step_atol

CPU = torch.device("cpu")

# (name, network, input shape): every generator and discriminator the families build, at tiny widths,
# in train mode as the step calls them; the norms and heads that change the traced code.
NETWORKS = {
    "G resnet instance": (lambda: build_generator("resnet_6blocks", ngf=4), (2, 3, 32, 32)),
    "G resnet triton": (lambda: build_generator("resnet_6blocks", ngf=4, kernels="triton"), (2, 3, 16, 16)),
    "G resnet batch dropout": (
        lambda: build_generator("resnet_6blocks", ngf=4, norm="batch", dropout=True),
        (2, 3, 32, 32),
    ),
    "G unet_128 batch": (lambda: build_generator("unet_128", ngf=4, norm="batch"), (2, 3, 128, 128)),
    "G unet_256 none": (lambda: build_generator("unet_256", ngf=2, norm="none"), (1, 3, 256, 256)),
    "G dcgan": (lambda: build_generator("dcgan", ngf=4), (2, 100, 1, 1)),
    "D basic": (lambda: build_discriminator("basic", ndf=4), (2, 3, 32, 32)),
    "D n_layers class head": (
        lambda: build_discriminator("n_layers", ndf=4, n_layers=2, n_classes=3),
        (2, 3, 32, 32),
    ),
    "D n_layers batch pix2pix": (
        lambda: build_discriminator("n_layers", ndf=4, n_layers=2, norm="batch", input_nc=6),
        (2, 6, 32, 32),
    ),
    "D pixel": (lambda: build_discriminator("pixel", ndf=4), (2, 3, 32, 32)),
    "D dcgan": (lambda: build_discriminator("dcgan", ndf=4), (2, 3, 64, 64)),
}


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_traces_as_one_graph(name, autocast):
    build, shape = NETWORKS[name]
    torch.manual_seed(0)
    net = build().train()
    x = torch.randn(shape)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        explained = torch._dynamo.explain(net)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_inductor_step_matches_eager_and_compiles_each_shape_once():
    """Three CycleGAN steps with --compile (Inductor, fullgraph) against three eager ones.

    Expected graphs: identity loss on, so each network runs on two batch shapes: the concatenated
    call (4 = real_A + real_B) and the single one (2: the cycle's second pass, or D judging the fakes in
    the generator step). G_AB and G_BA share one compiled graph per shape, as do D_A and D_B (same
    module code; the parameters are graph inputs): 2 classes x 2 shapes = 4 graphs, all in the first
    step. Steps 2 and 3 run with error_on_recompile: any recompilation fails them.
    """
    torch._dynamo.reset()
    counters.clear()
    eager = CycleGAN(tiny(pool_size=2), model_env())
    compiled = CycleGAN(tiny(pool_size=2, compile=True), model_env())
    compiled.load_state_dict(eager.state_dict())
    for step in range(3):
        real_A, real_B = _batch(seed=step)
        with torch._dynamo.config.patch(error_on_recompile=step > 0):
            got, _ = compiled.train_step(real_A, real_B)
        want, _ = eager.train_step(real_A, real_B)
        assert counters["stats"]["unique_graphs"] == 4
        # Inductor fuses and reorders fp32 reductions, and each step's updates carry the differences
        # into the next (tests/tolerance.py).
        tol = cycle_step_atol(eager.nets, real_A, len(want), steps=step + 1)
        for k, v in want.items():
            torch.testing.assert_close(got[k], v, rtol=tol, atol=tol, msg=f"step {step}: {k}")
    assert not counters["graph_break"]


def test_inductor_compiled_fused_generator_matches_eager():
    """The fused kernels inside an Inductor graph (fullgraph): outputs, input and weight gradients equal
    the eager fused network's, and channels-last stays channels-last through the custom ops."""
    torch.manual_seed(0)
    eager = build_generator("resnet_6blocks", ngf=4, kernels="triton").to(memory_format=torch.channels_last)
    compiled = copy.deepcopy(eager)
    compiled.compile(fullgraph=True, dynamic=False)
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 3, 16, 16)
    outs = []
    for net in (eager, compiled):
        xi = x.clone().requires_grad_()
        y = net(xi)
        y.backward(grad_out)
        outs.append((y.detach(), xi.grad))
    assert outs[1][0].is_contiguous(memory_format=torch.channels_last)
    # fp32 on both sides, Inductor's graph summing in other orders (tests/tolerance.py), counted on the
    # same layers on torch's ops.
    twin = build_generator("resnet_6blocks", ngf=4)
    assert_close_in_net(outs[1][0], outs[0][0], twin, x)
    assert_close_in_net(outs[1][1], outs[0][1], twin, x, backward=True)
    assert_same_gradients(eager, compiled, x, like=twin)


# --- the custom ops' fake implementations -----------------------------------------------------------------

LAYOUTS = {
    "nchw": lambda t: t,
    "nhwc": lambda t: t.contiguous(memory_format=torch.channels_last),
    "strided": lambda t: t.transpose(2, 3).contiguous().transpose(2, 3),  # H, W swapped: the ops copy it
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fake_ops_state_what_the_kernels_write(layout, dtype):
    """What torch.compile plans with (the fake) is what the kernel returns: shape, dtype and strides."""
    g = torch.Generator().manual_seed(0)
    x = LAYOUTS[layout](torch.randn(2, 4, 6, 5, generator=g)).to(dtype)
    w, b, r = torch.randn(4, dtype=dtype), torch.randn(4, dtype=dtype), torch.randn_like(x)
    conv_w, conv_b = torch.randn(3, 4, 3, 3, dtype=dtype), torch.randn(3, dtype=dtype)
    y, mean, rstd = _instance_norm_op(x, w, b, r, True, 1e-5, None)
    grad = torch.randn_like(y)
    calls = {
        "instance_norm": lambda x: _instance_norm_op(x, w, b, r, True, 1e-5, None),
        "instance_norm_backward": lambda x: _instance_norm_backward_op(x, w, b, mean, rstd, grad, True, None),
        "reflect_conv2d": lambda x: (_reflect_conv_op(x, conv_w, conv_b, 1, 1),),
        "reflect_conv2d stride 2": lambda x: (_reflect_conv_op(x, conv_w, None, 1, 2),),
    }
    for name, call in calls.items():
        real = call(x)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = call(mode.from_tensor(x))
        for t, f in zip(real, fake, strict=True):
            assert (f.shape, f.dtype, f.stride()) == (t.shape, t.dtype, t.stride()), name
    expected = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    assert y.is_contiguous(memory_format=expected)


def test_custom_ops_pass_torch_opcheck():
    """torch.library.opcheck: schema, fake vs real, autograd registration, and AOT dispatch with
    dynamic shapes, for every op in NCHW and channels-last."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 5, generator=g)
    w, b = torch.randn(4, generator=g), torch.randn(4, generator=g)
    for xi in (x, x.contiguous(memory_format=torch.channels_last)):
        _, mean, rstd = _instance_norm_op(xi, w, b, torch.randn_like(xi), True, 1e-5, 2)
        torch.library.opcheck(_instance_norm_op, (xi, w, b, torch.randn_like(xi), True, 1e-5, 2))
        torch.library.opcheck(_instance_norm_op, (xi, None, None, None, False, 1e-5, None))
        args = (xi, w, b, mean, rstd, torch.randn_like(xi), True, 2)
        torch.library.opcheck(_instance_norm_backward_op, args)
        torch.library.opcheck(_reflect_conv_op, (xi, torch.randn(3, 4, 3, 3), torch.randn(3), 1, 1))
        torch.library.opcheck(_reflect_conv_op, (xi, torch.randn(3, 4, 3, 3), None, 1, 2))
