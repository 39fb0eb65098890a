"""TensorRT: build an engine (a `.plan`) from the ONNX generator, and a Runner that executes it.

Written against the TensorRT 10 Python API (explicit batch, named I/O tensors, `execute_async_v3`).
`tensorrt` is optional and imported lazily, so this module imports on machines without it; every entry
point goes through `require_tensorrt()`, which turns a missing install into one line for the user.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from types import ModuleType

import torch

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError
from fastcycle.export.onnx import INPUT, OUTPUT  # cheap: export/onnx.py imports onnx lazily
from fastcycle.runner import UNRECORDED_SIZE_MULTIPLE

PRECISIONS = ("fp32", "fp16", "bf16")


def require_tensorrt() -> ModuleType:
    """`import tensorrt`, or a one-line UserError saying how to get it and what to use instead."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the wheel is there but its CUDA libraries are not
        missing = isinstance(e, ModuleNotFoundError) and e.name == "tensorrt"
        why = "is not installed" if missing else f"failed to load ({' '.join(str(e).split())})"
        raise UserError(
            f"tensorrt {why}: pip install 'fastcycle[tensorrt]' (tensorrt>=10) on a machine with an NVIDIA "
            "GPU and driver, or use ONNX Runtime (--onnx) or AOTInductor (--aoti) instead"
        ) from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise UserError(f"tensorrt {trt.__version__} is too old: pip install 'fastcycle[tensorrt]'")
    return trt


@functools.cache
def _logger():
    # One logger for the process: TensorRT keeps a reference from every builder and runtime made with it.
    trt = require_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def parse_batch_range(text: str) -> tuple[int, int, int]:
    """'1:8:32' -> (1, 8, 32), the optimisation profile's MIN:OPT:MAX batch; '8' -> (8, 8, 8)."""
    if re.fullmatch(r"\d+(:\d+:\d+)?", text.strip(), flags=re.ASCII):
        nums = tuple(int(p) for p in text.strip().split(":"))
        lo, opt, hi = nums * 3 if len(nums) == 1 else nums
        if 1 <= lo <= opt <= hi:
            return lo, opt, hi
    raise UserError(f"--batch {text!r} is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:8:32, or 8)")


def _write_atomic(path: Path, data) -> None:
    """Write `data`, bytes or a buffer such as TensorRT's IHostMemory, to `path` (a durable write_atomic)."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _io_fits(
    inputs: dict[str, tuple[int, ...]], outputs: list[str], batch: tuple[int, int], hw: tuple[int, int]
) -> bool:
    """Whether a network's inputs (name -> shape, -1 = dynamic) and outputs are INPUT -> OUTPUT, the input
    (N, C, H, W), C fixed (1 gray, 3 RGB), such that an optimisation profile over N in `batch` at
    (H, W) = `hw` fits it."""
    shape = inputs.get(INPUT, ())
    c = shape[1] if len(shape) == 4 else 0
    spans = [batch, (c, c), (hw[0], hw[0]), (hw[1], hw[1])]
    return (
        len(inputs) == 1
        and outputs == [OUTPUT]
        and len(shape) == 4
        and c > 0  # the profile fixes the channels: a dynamic count (-1) has none to give it
        and all(d == -1 or (d, d) == span for d, span in zip(shape, spans, strict=True))
    )


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    precision: str = "fp16",
    batch: tuple[int, int, int] = (1, 8, 32),
    hw: tuple[int, int] = (256, 256),
    timing_cache: str | Path | None = None,
) -> Path:
    """Build a TensorRT engine for (N, C, H, W) float32 images (C: the ONNX input's channels), N in the
    `batch` (MIN, OPT, MAX) range and (H, W) = `hw`, and write it to `plan_path` atomically. Returns
    `plan_path`."""
    if precision not in PRECISIONS:
        raise UserError(f"--trt-precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    lo, opt, hi = parse_batch_range(":".join(map(str, batch)))
    h, w = hw
    if h <= 0 or w <= 0 or h % 4 or w % 4:  # the generator downsamples twice by 2
        raise UserError(f"image size {h}x{w} must be positive multiples of 4")
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    trt = require_tensorrt()
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path} does not exist: export the generator first (fastcycle export --onnx)")

    builder = trt.Builder(_logger())
    network = builder.create_network(0)  # TRT 10: explicit batch is the only mode; the flag is deprecated
    parser = trt.OnnxParser(network, _logger())
    # TRT 10 parses InstanceNormalization into its native INormalizationLayer (on by default); set it anyway
    # so the plan never depends on the InstanceNormalization plugin library, and the fp32 pin below finds it.
    parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external weights next to it
        errors = "; ".join(
            " ".join(str(parser.get_error(i)).split()) for i in range(min(parser.num_errors, 3))
        )
        raise UserError(f"TensorRT cannot parse {onnx_path}: {errors or 'unknown error'}")
    inputs = {t.name: tuple(t.shape) for t in map(network.get_input, range(network.num_inputs))}
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if not _io_fits(inputs, outputs, (lo, hi), (h, w)):
        raise UserError(
            f"{onnx_path} must map one input {INPUT!r} taking batch {lo}..{hi} at {h}x{w} to {OUTPUT!r}, but "
            f"maps {inputs} (-1 = dynamic) to {outputs}; re-export it or change the sizes"
        )

    config = builder.create_builder_config()
    if precision != "fp32":  # fp32 keeps TensorRT's default TF32 convolutions, as torch's cuDNN default does
        flag = getattr(trt.BuilderFlag, precision.upper(), None)
        if flag is None:  # TRT 11 removed the weak-typing precision flags (strong typing only)
            raise UserError(
                f"--trt-precision {precision} needs TensorRT 10 (found {trt.__version__}, which removed the "
                "fp16/bf16 builder flags): pip install 'tensorrt>=10,<11', or use --trt-precision fp32"
            )
        config.set_flag(flag)
        # Instance norm in reduced precision is a known source of large errors (the variance's squares
        # overflow fp16, bf16 keeps 8 mantissa bits): run each normalization layer in fp32, and make
        # TensorRT obey that rather than treat it as a hint (NVIDIA/TensorRT#3101, #2466).
        for layer in (network.get_layer(i) for i in range(network.num_layers)):
            if layer.type == trt.LayerType.NORMALIZATION:
                layer.precision = trt.float32
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    c = inputs[INPUT][1]  # static, checked by _io_fits
    profile.set_shape(INPUT, (lo, c, h, w), (opt, c, h, w), (hi, c, h, w))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        # Layer timings from earlier builds on this GPU + TensorRT version: rebuilds skip re-timing them.
        # `cache` must stay alive until the build is done; it is a local, so it does.
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            cache = config.create_timing_cache(b"")  # written on another GPU or TensorRT: start afresh
            config.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)  # None on failure; TensorRT logged why
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path} (see its errors above)")
    _write_atomic(plan_path, plan)
    if cache_path is not None:
        _write_atomic(cache_path, config.get_timing_cache().serialize())
    return plan_path


class TrtRunner:
    """Runs a `.plan` on CUDA: float32 (N, input_nc, H, W) in [-1, 1] -> (N, output_nc, H, W), N within
    the build's range."""

    name = "tensorrt"

    def __init__(self, plan_path: str | Path, device: torch.device):
        plan_path, device = Path(plan_path), torch.device(device)
        if device.type != "cuda":
            raise UserError(f"the tensorrt backend runs on CUDA only, not on {device}; use --onnx or --aoti")
        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise UserError("the tensorrt backend needs a CUDA GPU, and torch sees none")
        if not plan_path.is_file():
            what = "is a folder, not an engine" if plan_path.is_dir() else "does not exist"
            raise UserError(
                f"{plan_path} {what}; build one with `fastcycle export --checkpoint RUN --trt {plan_path} "
                "--size 256` (RUN: the run folder; the engine takes images of --size)"
            )
        self.device = torch.device(
            "cuda", torch.cuda.current_device() if device.index is None else device.index
        )
        with torch.cuda.device(self.device):  # the engine lives on the device current at deserialization
            # The binding keeps the Runtime alive as long as the engine it deserialized.
            self.engine = trt.Runtime(_logger()).deserialize_cuda_engine(plan_path.read_bytes())
            if self.engine is None:
                raise UserError(
                    f"cannot load {plan_path}: plans only run on the TensorRT version and GPU model that "
                    f"built them (this is TensorRT {trt.__version__}); rebuild it here"
                )
            self.context = self.engine.create_execution_context()
            # TensorRT documents extra device syncs on the legacy default stream; it gets a stream of its own.
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        io = {n: self.engine.get_tensor_mode(n) for n in names}
        if io != {INPUT: trt.TensorIOMode.INPUT, OUTPUT: trt.TensorIOMode.OUTPUT} or any(
            self.engine.get_tensor_dtype(n) != trt.float32 for n in names
        ):
            raise UserError(f"{plan_path} is not a fastcycle generator engine (float32 {INPUT} -> {OUTPUT})")
        lo, _, hi = (tuple(d) for d in self.engine.get_tensor_profile_shape(INPUT, 0))  # (N, C, H, W) each
        self.batch, self.hw = (lo[0], hi[0]), (lo[2], lo[3])
        self.channels = (lo[1], tuple(self.engine.get_tensor_shape(OUTPUT))[1])  # (input_nc, output_nc)
        self.size_multiple = UNRECORDED_SIZE_MULTIPLE  # a plan keeps no record of its generator
        self.input_nc, self.output_nc = self.channels
        # A plan does not record the precision it was built in: assume reduced, so that 16-bit images
        # are never silently computed at fp16/bf16 precision (fastcycle.translator refuses them).
        self.precision = "fp16"
        self.note = (
            f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(self.device)}, "
            f"batch {lo[0]}..{hi[0]} at {lo[2]}x{lo[3]}"
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (lo, hi), (h, w), (c_in, c_out) = self.batch, self.hw, self.channels
        if x.dim() != 4 or tuple(x.shape[1:]) != (c_in, h, w):
            raise UserError(f"the TensorRT engine takes (N, {c_in}, {h}, {w}) images, got {tuple(x.shape)}")
        n = x.shape[0]
        if not lo <= n <= hi:
            raise UserError(
                f"batch of {n} is outside the TensorRT engine's range {lo}..{hi}; rebuild it with "
                f"--batch MIN:OPT:MAX covering {n}"
            )
        x = x.to(self.device, torch.float32).contiguous()  # the engine reads linear NCHW float32
        y = x.new_empty(n, c_out, h, w)  # allocated on the caller's stream, like x
        caller = torch.cuda.current_stream(self.device)
        with torch.cuda.device(self.device):
            self.stream.wait_stream(caller)  # x is ready, y's memory is free
            if not self.context.set_input_shape(INPUT, tuple(x.shape)):
                raise RuntimeError(f"TensorRT rejected input shape {tuple(x.shape)}")
            self.context.set_tensor_address(INPUT, x.data_ptr())
            self.context.set_tensor_address(OUTPUT, y.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see its errors above)")
            # The caller's later work (reading y, freeing or reusing x's memory) waits for the engine.
            caller.wait_stream(self.stream)
        return y
