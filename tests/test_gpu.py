"""The GPU correctness subset, `pytest -m gpu`: what only a GPU can check, before any GPU time is spent on
benchmarks (benchmarks/device.sh runs it first).

    the Triton kernels, compiled for the GPU, at the generator's real shapes (256x256 images), forward
        and backward, bf16, fp16 and fp32, against their torch references
    a CycleGAN step with --kernels triton against --kernels torch, bf16, resnet_9blocks at 256x256
    the torch generator's gradients at batch 1 are the same in channels-last and NCHW (they are not on
        the CPU, a PyTorch bug)
    the step never synchronises (CUDA's own sync detector, which also sees what a dispatch mode cannot)
    the step with CUDA graphs (Inductor, mode reduce-overhead): replays give eager's losses
    an AOTInductor CUDA package against eager
    DALI's GPU pipeline and ONNX Runtime's CUDA provider, where installed (skipped with a reason if not)

Every test is skipped without CUDA. Estimated time on an H100/H200 with empty caches, unmeasured so far
(no GPU was available where this was written): 60-90 s, nearly all of it compilation: ~30 Triton kernel
variants at ~1 s each, three small Inductor graphs with their backward (~30 s), one AOTInductor package
(~15 s); the checks themselves take a few seconds. The helpers take a device, and the tests at the
bottom of this file run the same helpers on the CPU at tiny shapes, so their logic runs in every CI run.

Kernel tolerances compare against a float64 oracle: for each output and gradient, the kernel's error
must be at most twice the error of torch's own op in the same dtype, plus one unit in the last place
of the largest value. The two may round at other points, but the kernels must not be less accurate
than what they replace; an indexing or layout bug is off by orders of magnitude more.
"""

from __future__ import annotations

import pytest
import torch

from fastcycle.config import apply_overrides
from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.kernels.instance_norm import instance_norm, instance_norm_reference
from fastcycle.kernels.reflect_conv import reflect_conv2d, reflect_conv2d_reference
from fastcycle.models import ResnetGenerator, build_generator, init_weights
from fastcycle.presets import cyclegan
from fastcycle.train import CycleGAN
from tests.test_train import model_env

CUDA = torch.device("cuda")


def on_gpu(test):
    """In `pytest -m gpu`, and skipped where there is no CUDA GPU."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# --- helpers, each also run on the CPU at the bottom of this file --------------------------------------


def _run(fn, inputs, grad_out, **kw):
    """fn's output and the gradients of every tensor input, under one upstream gradient."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves, **kw)
    y.backward(grad_out.to(y.dtype))
    return [y.detach()] + [t.grad for t in leaves if t is not None]


def check_op(fn, ref, inputs, **kw) -> dict[str, float]:
    """The kernel `fn` against the float64 oracle `ref`, as accurate as `ref` run in the inputs' dtype.

    inputs: tensors (or None) in the dtype under test, on the device. Returns each error ratio.
    """
    dtype = next(t.dtype for t in inputs if t is not None)
    exact_inputs = [None if t is None else t.double() for t in inputs]
    g = torch.Generator(inputs[0].device).manual_seed(1234)  # not the inputs' seed: g must not be affine in x
    y_shape = ref(*exact_inputs, **kw).shape
    grad_out = torch.randn(y_shape, device=inputs[0].device, generator=g).to(dtype)  # same values for all
    exact = _run(ref, exact_inputs, grad_out.double(), **kw)
    kernel = _run(fn, inputs, grad_out, **kw)
    torch_ = _run(ref, inputs, grad_out, **kw)
    ratios = {}
    names = ["out", *(f"grad{i}" for i in range(1, len(exact)))]
    for name, k, t, e in zip(names, kernel, torch_, exact, strict=True):
        assert k.dtype == t.dtype and k.shape == t.shape, name
        err_k = (k.double() - e).abs().max().item()
        err_t = (t.double() - e).abs().max().item()
        ulp = torch.finfo(dtype).eps * e.abs().max().item()
        assert err_k <= 2 * err_t + ulp, f"{name}: kernel error {err_k:.3g}, torch's {err_t:.3g}"
        ratios[name] = err_k / max(err_t, 1e-30)
    return ratios


def instance_norm_case(device, dtype, shape, relu: bool, residual: bool):
    """The generator's norms: N, C, H, W channels-last, no affine; (relu) after the first conv of a
    block and the outer convs, (residual) after the second conv of a residual block."""
    g = torch.Generator().manual_seed(0)
    x = (
        (torch.randn(shape, generator=g) * 2 + 0.5)
        .to(device, dtype)
        .contiguous(memory_format=torch.channels_last)
    )
    r = torch.randn(shape, generator=g).to(device, dtype) if residual else None
    return check_op(instance_norm, instance_norm_reference, [x, None, None, r], relu=relu)


def reflect_conv_case(device, dtype, shape, c_out: int, k: int):
    """The generator's reflection-padded convs: (N, C_in, H, W) channels-last, bias, padding k // 2.

    fp32 runs with TF32 off: the kernel then multiplies in IEEE fp32 as cuDNN does. (With TF32 on, the
    kernel uses TF32 while cuDNN may or may not for a given shape, so no tight bound would hold.)
    """
    g = torch.Generator().manual_seed(0)
    c_in = shape[1]
    x = torch.randn(shape, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(c_out, c_in, k, k, generator=g) / (c_in * k * k) ** 0.5).to(device, dtype)
    b = torch.randn(c_out, generator=g).to(device, dtype)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        return check_op(reflect_conv2d, reflect_conv2d_reference, [x, w, b], padding=k // 2)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _cyclegan(device, kernels: str, amp: bool, **overrides) -> CycleGAN:
    cfg = apply_overrides(cyclegan(), {"batch_size": 2, "channels_last": True, "pool_size": 0} | overrides)
    # seeded by cfg: the same weights every time
    return CycleGAN(cfg, model_env(device, amp, "bf16" if amp else "auto", kernels))


def _grads(model: CycleGAN) -> torch.Tensor:
    return torch.cat(
        [p.grad.flatten().double() for n in model.generators for p in model.nets[n].parameters()]
    )


def compare_steps(device, size: int, **overrides) -> None:
    """One bf16 step with --kernels triton against one with --kernels torch, both measured against the
    fp32 torch step (TF32 off) on the same weights and batch: losses and the generators' gradients.

    Batch 2, not 1: PyTorch's own instance-norm backward (CPU, torch 2.11 and 2.14) returns a wrong
    gradient when the batch is 1 and the upstream gradient is channels-last, which would corrupt the
    torch side and the fp32 oracle (the fused kernel is right there).
    """
    g = torch.Generator().manual_seed(0)
    real_A, real_B = (
        (torch.rand(2, 3, size, size, generator=g) * 2 - 1)
        .to(device)
        .contiguous(memory_format=torch.channels_last)
        for _ in range(2)
    )
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        fp32 = _cyclegan(device, "torch", False, **overrides)
        want, _ = fp32.train_step(real_A, real_B)
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    bf16 = {k: _cyclegan(device, k, True, **overrides) for k in ("torch", "triton")}
    got = {k: m.train_step(real_A, real_B)[0] for k, m in bf16.items()}
    for name, exact in want.items():
        err = {k: abs(got[k][name].item() - exact.item()) for k in got}
        # bf16 keeps 8 significand bits (0.4% per rounding); both paths round at different points of
        # the same network, so neither should be more than twice as far from fp32 as the other, with
        # an allowance of 1% of the loss for the luck of one path's rounding cancelling out.
        assert err["triton"] <= 2 * err["torch"] + 1e-2 * abs(exact.item()), (name, err)
    g32 = _grads(fp32)
    rel = {k: ((_grads(m) - g32).norm() / g32.norm()).item() for k, m in bf16.items()}
    # The same bound on the generators' whole gradient vector (relative L2 error against fp32).
    assert rel["triton"] <= 2 * rel["torch"] + 1e-2, rel


# --- on the GPU -----------------------------------------------------------------------------------------

IN_CASES = {  # (shape, relu, residual): the generator's norms at 256x256
    "256ch-64x64-residual": ((1, 256, 64, 64), False, True),
    "64ch-256x256-relu": ((1, 64, 256, 256), True, False),
}
CONV_CASES = {  # (shape, C_out, kernel): the generator's reflection-padded convs at 256x256
    "residual-3x3": ((1, 256, 64, 64), 256, 3),
    "first-7x7": ((1, 3, 256, 256), 64, 7),
    "last-7x7": ((1, 64, 256, 256), 3, 7),
}


@on_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", IN_CASES)
def test_instance_norm_kernel_at_generator_shapes(case, dtype):
    shape, relu, residual = IN_CASES[case]
    instance_norm_case(CUDA, DTYPES[dtype], shape, relu, residual)


@on_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_reflect_conv_kernel_at_generator_shapes(case, dtype):
    shape, c_out, k = CONV_CASES[case]
    reflect_conv_case(CUDA, DTYPES[dtype], shape, c_out, k)


@on_gpu
def test_triton_step_matches_torch_step_in_bf16():
    compare_steps(CUDA, 256)  # resnet_9blocks, ngf 64: the real network at its real size


@on_gpu
def test_torch_generator_gradients_do_not_depend_on_the_layout_at_batch_1():
    """--kernels torch --channels-last at batch 1 (the benchmark ladder's channels_last case) must train
    the same network as NCHW. On the CPU it does not: PyTorch's instance-norm backward (2.11, 2.14)
    is wrong for batch 1 with a channels-last upstream gradient, which is why compare_steps uses batch
    2. This checks CUDA's instance norm, which the torch path uses there."""
    grads = []
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for memory_format in (torch.contiguous_format, torch.channels_last):
            torch.manual_seed(0)
            net = build_generator("resnet_6blocks", ngf=16).to(CUDA, memory_format=memory_format)
            x = (torch.rand(1, 3, 64, 64, device=CUDA) * 2 - 1).contiguous(memory_format=memory_format)
            torch.manual_seed(1)
            net(x).backward(torch.randn(1, 3, 64, 64, device=CUDA))
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    # Same fp32 math in another layout, only summation orders differ: 0.6% on the CPU at batch 2 (the
    # norms over 16x16 planes amplify rounding); the CPU's batch-1 bug gives 130%.
    assert ((grads[1] - grads[0]).norm() / grads[0].norm()).item() <= 5e-2


@on_gpu
@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_step_does_not_synchronize(kernels):
    model = _cyclegan(CUDA, kernels, True, netG="resnet_6blocks", ngf=8, ndf=8, pool_size=2)
    real_A, real_B = (torch.rand(2, 3, 64, 64, device=CUDA) * 2 - 1 for _ in range(2))
    model.train_step(real_A, real_B)  # first step: lazy CUDA, cuDNN and optimizer-state set-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises
    try:
        for _ in range(2):  # the second draws from the (now full) pools
            losses, _ = model.train_step(real_A, real_B)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(v) for v in losses.values())


@on_gpu
def test_cuda_graph_replays_give_eager_losses():
    """Each network compiled with Inductor in mode reduce-overhead (CUDA graphs), as the benchmark's
    cudagraphs case does, on the fused kernels; no identity loss, so three graphs to compile (one G
    shape, two D shapes). Steps 2-4 replay the recorded graphs. Lockstep: before each step the graphed
    model takes the eager one's state (an in-place copy into the parameters the graphs read), so each
    step compares one step; each step's batch has another scale, so a replay that read the previous
    step's inputs or weights would be off by tens of percent."""
    small = dict(netG="resnet_6blocks", ngf=8, ndf=8, lambda_identity=0.0)
    eager = _cyclegan(CUDA, "triton", True, **small)
    graphed = _cyclegan(CUDA, "triton", True, **small)
    for net in graphed.nets.values():
        net.compile(mode="reduce-overhead", fullgraph=True, dynamic=False)
    g = torch.Generator(CUDA).manual_seed(0)
    for step in range(4):
        real_A, real_B = (
            ((torch.rand(2, 3, 64, 64, device=CUDA, generator=g) * 2 - 1) * (0.25 + 0.25 * step)).contiguous(
                memory_format=torch.channels_last
            )
            for _ in range(2)
        )
        graphed.load_state_dict(eager.state_dict())
        torch.compiler.cudagraph_mark_step_begin()
        got, _ = graphed.train_step(real_A, real_B)
        want, _ = eager.train_step(real_A, real_B)
        for k, v in want.items():
            # bf16 on both sides; Inductor fuses the elementwise work between convs and rounds to bf16
            # at other points than eager: a few bf16 ulps through the network, ~1% of a loss.
            torch.testing.assert_close(got[k], v, rtol=3e-2, atol=3e-3, msg=f"step {step}: {k}")


@on_gpu
def test_aoti_cuda_package_matches_eager(tmp_path):
    from fastcycle.export.aoti import AotiRunner, export_aoti

    torch.manual_seed(0)
    net = (
        init_weights(ResnetGenerator(3, 3, ngf=8, norm="instance", n_blocks=1), "normal", 0.02)
        .to(CUDA)
        .eval()
    )
    # TF32 off on both sides: then fp32 Inductor kernels against fp32 eager differ only in summation order.
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        path = export_aoti(
            net, tmp_path / "g.pt2", example=torch.zeros(1, 3, 64, 64, device=CUDA), max_batch=4
        )
        runner = AotiRunner(path, CUDA)
        x = torch.rand(3, 3, 64, 64, device=CUDA) * 2 - 1
        with torch.no_grad():
            got, want = runner(x), net(x)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    # The CPU AOTI test's bound (test_export_aoti.TOL): fp32 on both sides, only float sums reordered.
    assert (got - want).abs().max().item() <= 1e-4
    assert got.device.type == "cuda", got.device


@on_gpu
def test_onnx_runtime_cuda_provider_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnxscript", reason="onnxscript (the ONNX exporter) is not installed")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA execution provider")
    from fastcycle.export.onnx import export_onnx
    from fastcycle.export.ort import OrtRunner

    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(3, 3, ngf=8, norm="instance", n_blocks=1), "normal", 0.02).eval()
    net.spec = GENERATOR_SPECS["resnet_6blocks"]  # a one-block ResNet: the ResNets' input contract
    path = export_onnx(net, tmp_path / "g.onnx", size=64)
    runner = OrtRunner(path, CUDA)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want = net(x)
    got = runner(x.to(CUDA)).cpu()
    # ONNX Runtime's CUDA provider runs fp32 convs in TF32 (10-bit significands, 2^-11 relative per
    # product) unless told otherwise: ~1e-3 through this network's 7 convs and norms; a wrong binding,
    # layout or provider is off by more than 0.1.
    assert (got - want).abs().max().item() <= 5e-3
    assert runner.cuda, runner.note  # the CUDA provider with IO binding, not the CPU fallback


@on_gpu
def test_dali_gpu_pipeline_matches_the_torch_loader(tmp_path):
    import fastcycle.data.dali_loader as dali_loader
    from fastcycle.data.transforms import to_uint8
    from tests.test_loaders import batches, make_loader, smooth_images

    if dali_loader.fn is None:
        pytest.skip("NVIDIA DALI is not installed")
    smooth_images(tmp_path)
    kw = dict(policy="resize_and_crop", load_size=32, crop_size=32, flip=False, serial_batches=True)
    kw |= dict(batch_size=1, device=CUDA)
    dali = list(make_loader(tmp_path, "dali", tmp_path / "dali", **kw).epoch(0))
    want = batches(make_loader(tmp_path, "torch", tmp_path / "torch", **kw))
    got = [(b.A.cpu(), b.B.cpu()) for b in dali]
    assert len(got) == len(want)
    for p, q in zip(want, got, strict=True):
        for a, b in zip(p, q, strict=True):
            diff = (to_uint8(a).int() - to_uint8(b).int()).abs()
            # The CPU DALI test's bound: DALI's and PIL's bicubic filters round differently.
            assert diff.max() <= 3 and diff.float().mean() <= 0.5
    assert all(b.A.is_cuda and b.B.is_cuda for b in dali)  # decoded and augmented on the GPU


# --- the same helpers on the CPU, at tiny shapes (Triton's interpreter) --------------------------------


@pytest.mark.parametrize("case", ["norm", "norm-residual", "conv3", "conv7"])
def test_gpu_helpers_on_the_cpu(case):
    cpu = torch.device("cpu")
    if case.startswith("norm"):
        instance_norm_case(cpu, torch.float32, (2, 16, 12, 10), relu=case == "norm", residual=case != "norm")
    else:
        k = int(case[-1])
        reflect_conv_case(cpu, torch.float32, (1, 8, 13, 11), 4, k)


def test_check_op_fails_a_wrong_kernel():
    """The oracle bound can fail: a kernel 0.1% off everywhere is caught."""
    cpu = torch.device("cpu")
    x = torch.randn(2, 4, 8, 8)

    def off_by_a_bit(x, *args, **kw):
        return instance_norm(x, *args, **kw) * (1 + 1e-3)

    with pytest.raises(AssertionError, match="kernel error"):
        check_op(off_by_a_bit, instance_norm_reference, [x.to(cpu), None, None, None], relu=False)


def test_step_comparison_on_the_cpu():
    compare_steps(torch.device("cpu"), 16, netG="resnet_6blocks", ngf=4, ndf=4, netD="n_layers", n_layers_D=2)
