"""Generator inference: images/s and latency of every backend `fastcycle translate` can use.

    pytest benchmarks/bench_infer.py                      # on a GPU: resnet_9blocks, 256x256, batch 1/8/32
    pytest benchmarks/bench_infer.py --benchmark-disable  # anywhere: a tiny generator, each case once

Providers: eager fp32; eager bf16 channels-last; torch.compile (max-autotune: Triton GEMM autotuning
and CUDA graphs); AOTInductor; ONNX Runtime (CUDA execution provider with IO binding on a GPU);
TensorRT fp16 where `tensorrt` is installed (never here: see docs/translation-and-export.md). Each
round is one batch, device-synchronised; extra_info has `images_per_s` (median), p50/p99 latency in
ms, and MFU against the dense bf16 peak of the GPU it ran on (fastcycle.train.flops.PEAK_BF16; null
where unknown), with the FLOPs counted by torch's FlopCounterMode on the generator itself.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import budget
from benchmarks.conftest import DEVICE, SMOKE, compile_options, environment, rounds, synchronize
from fastcycle.models import build_generator
from fastcycle.train.flops import peak_flops

SIZE = 32 if SMOKE else 256
BATCHES = [1, 2] if SMOKE else [1, 8, 32]
PEAK = peak_flops(DEVICE)  # FLOP/s MFU is quoted against; None (MFU null) where unknown
PROVIDERS = ["eager_fp32", "eager_bf16_cl", "compile", "aoti", "onnxruntime", "tensorrt"]


def _generator():
    if SMOKE:
        return build_generator("resnet_6blocks", ngf=4, norm="instance").eval().requires_grad_(False)
    return build_generator("resnet_9blocks", ngf=64, norm="instance").eval().requires_grad_(False)


def _flops_per_image(net) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.cpu()(torch.zeros(1, 3, SIZE, SIZE))
    return float(counter.get_total_flops())


def _runner(provider: str, net, tmp_path, max_batch: int):
    """(a callable on (N, 3, SIZE, SIZE) float32 batches on DEVICE, extra_info it adds); the callable
    is None when the provider is unavailable here."""
    net = net.to(DEVICE)
    if provider == "eager_fp32":
        return net, {}
    if provider == "eager_bf16_cl":
        net = net.to(memory_format=torch.channels_last)

        def bf16(x):
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
                return net(x.contiguous(memory_format=torch.channels_last))

        return bf16, {}
    if provider == "compile":
        # max-autotune: Triton GEMM/conv autotuning and CUDA graphs (no launch gaps at batch 1); a
        # --budget run falls back to "default" (bounded compile time) when autotuning would not fit.
        options = compile_options(mode=budget.compile_mode("max-autotune"))
        return torch.compile(net, dynamic=False, **options), {"compile_mode": options.get("mode", "eager")}
    if provider == "aoti":
        from fastcycle.export.aoti import AotiRunner, export_aoti

        example = torch.zeros(2, 3, SIZE, SIZE, device=DEVICE)
        path = export_aoti(net, tmp_path / "g.pt2", example=example, max_batch=max_batch)
        return AotiRunner(path, DEVICE), {}
    if provider == "onnxruntime":
        from fastcycle.export.onnx import export_onnx
        from fastcycle.export.ort import OrtRunner

        return OrtRunner(export_onnx(net, tmp_path / "g.onnx", size=SIZE), DEVICE), {}
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return None, {}
    from fastcycle.export.onnx import export_onnx
    from fastcycle.export.trt import TrtRunner, build_engine

    onnx_path = export_onnx(net, tmp_path / "g.onnx", size=SIZE)
    plan = build_engine(onnx_path, tmp_path / "g.plan", precision="fp16", batch=(1, 8, 32), hw=(SIZE, SIZE))
    return TrtRunner(plan, DEVICE), {}


@pytest.fixture(scope="module")
def generator():
    net = _generator()
    return net, _flops_per_image(net)


@pytest.fixture(scope="module")
def runners():
    """One runner per provider for all batch sizes: AOTI and TensorRT compile once, for the largest."""
    return {}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_infer(benchmark, generator, runners, tmp_path, provider, batch):
    net, flops = generator
    if provider not in runners:
        runners[provider] = _runner(provider, net, tmp_path, max(BATCHES))
    run, runner_info = runners[provider]
    if run is None:
        pytest.skip(f"{provider} is not installed on this machine")
    x = torch.rand(batch, 3, SIZE, SIZE, device=DEVICE) * 2 - 1

    def once():
        with torch.no_grad():
            run(x)
        synchronize()

    for _ in range(3):  # compile, autotune, CUDA-graph capture, allocator warm-up
        once()
    benchmark.pedantic(once, rounds=rounds(100), iterations=1)
    info = {"provider": provider, "batch": batch, "size": SIZE, "flops_per_image": flops, **runner_info}
    info["env"] = environment()
    stats = getattr(benchmark, "stats", None)
    if stats:
        times = sorted(stats.stats.data)
        median = stats.stats.median
        info["images_per_s"] = batch / median
        info["latency_ms_p50"] = 1e3 * median
        info["latency_ms_p99"] = 1e3 * times[min(len(times) - 1, int(0.99 * len(times)))]
        info["mfu"] = batch * flops / median / PEAK if PEAK else None
    benchmark.extra_info.update(info)
