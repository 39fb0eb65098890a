"""A Triton Inference Server model repository from exported generators, for a standalone `tritonserver`.

    DIR/
      .fastcycle-triton-repo     what wrote it (the folder may then be replaced by a later export)
      AtoB/config.pbtxt          ModelConfig in protobuf text format
      AtoB/1/model.onnx          ONNX Runtime backend (or model.plan: TensorRT backend)
      BtoA/...                   a CycleGAN run's other generator; other files hold one

Each config.pbtxt is a `ModelConfig` protobuf (Triton's model_config.proto, as tritonclient ships it) built
from the exported ONNX graph itself (its input and output names, element types and dims without the batch
axis) and printed with text_format, so it parses by construction and matches the graph. The repository is
made in a temporary folder beside DIR and renamed into place whole: a server never sees half of one.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from fastcycle.atomic import write_folder_atomic
from fastcycle.choices import DIRECTIONS
from fastcycle.errors import UserError

# --triton-backend -> (ModelConfig.platform, ModelConfig.backend, the file Triton loads from the version
# folder). Both names are set: Triton fills either from the other, but a config that states both does not
# depend on the server's auto-completion.
BACKENDS = {
    "onnxruntime": ("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "tensorrt": ("tensorrt_plan", "tensorrt", "model.plan"),
}
ACCELERATORS = ("none", "tensorrt")  # the ONNX Runtime backend's GPU execution accelerators offered
INSTANCE_KINDS = ("gpu", "cpu")
MARKER = ".fastcycle-triton-repo"  # Triton reads only the repository's subfolders; a file is ignored
VERSION = "1"  # the one model version folder
# The ONNX Runtime backend's precision_mode values (onnxruntime_backend: FP32, FP16, INT8; no BF16).
ACCELERATOR_PRECISION = {"fp32": "FP32", "fp16": "FP16"}


@dataclass
class TritonOptions:
    backend: str = "onnxruntime"  # the server backend: onnxruntime (model.onnx) or tensorrt (model.plan)
    accelerator: str = "none"  # onnxruntime only: "tensorrt", its TensorRT execution accelerator
    precision: str = "fp16"  # the accelerator's precision_mode (--trt-precision)
    batch: tuple[int, int, int] = (1, 8, 32)  # --batch MIN:OPT:MAX; MAX is max_batch_size
    preferred_batch: tuple[int, ...] = ()  # dynamic batching's preferred sizes; () = OPT and MAX
    queue_delay_us: int = 100  # how long a request may wait for others to batch with
    instances: int = 1  # model instances per GPU (per host for cpu)
    instance_kind: str = "gpu"  # where the instances run: KIND_GPU or KIND_CPU


def require_model_config() -> ModuleType:
    """tritonclient's compiled model_config.proto, or a one-line UserError saying how to get it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError(
            "--triton-repo writes Triton's ModelConfig through tritonclient, which is not installed: "
            "pip install 'fastcycle[serve]'"
        ) from None
    return model_config_pb2


def parse_preferred(text: str | None, max_batch: int) -> tuple[int, ...]:
    """'4,16' -> (4, 16): increasing batch sizes within 1..max_batch. None or '' -> ()."""
    if not text:
        return ()
    if re.fullmatch(r"\d+(,\d+)*", text.replace(" ", ""), flags=re.ASCII):
        sizes = tuple(int(t) for t in text.replace(" ", "").split(","))
        if sizes[0] >= 1 and all(a < b for a, b in itertools.pairwise(sizes)) and sizes[-1] <= max_batch:
            return sizes
    raise UserError(
        f"--triton-preferred-batch {text!r} is not increasing batch sizes from 1 to --batch's MAX "
        f"({max_batch}), e.g. 8,{max_batch}"
    )


def check_options(opts: TritonOptions, dynamic_hw: bool) -> None:
    """One UserError line for a combination the repository cannot serve."""
    if opts.backend not in BACKENDS:
        raise UserError(f"--triton-backend {opts.backend!r} is not one of: {', '.join(BACKENDS)}")
    if opts.accelerator not in ACCELERATORS:
        raise UserError(f"--triton-accelerator {opts.accelerator!r} is not one of: {', '.join(ACCELERATORS)}")
    if opts.instance_kind not in INSTANCE_KINDS:
        raise UserError(f"--triton-instance-kind {opts.instance_kind!r} is not one of: gpu, cpu")
    if opts.batch[0] != 1:  # the dynamic batcher sends whatever has arrived, a lone request too
        raise UserError(f"--triton-repo serves batches from 1: use --batch 1:{opts.batch[1]}:{opts.batch[2]}")
    if opts.instances < 1 or opts.queue_delay_us < 0:
        raise UserError("--triton-instances must be at least 1 and --triton-queue-delay-us at least 0")
    if opts.backend == "tensorrt":
        if opts.accelerator != "none":
            raise UserError(
                "--triton-accelerator is an option of the onnxruntime backend; --triton-backend tensorrt "
                "already serves a TensorRT engine"
            )
        if dynamic_hw:  # build_engine's one optimisation profile fixes H and W at --size
            raise UserError("--triton-backend tensorrt builds an engine at --size; drop --dynamic-hw")
        if opts.instance_kind == "cpu":
            raise UserError("--triton-backend tensorrt runs on GPUs: drop --triton-instance-kind cpu")
    if opts.accelerator == "tensorrt":
        if opts.instance_kind == "cpu":
            raise UserError(
                "--triton-accelerator tensorrt is a GPU accelerator: drop --triton-instance-kind cpu"
            )
        if opts.precision not in ACCELERATOR_PRECISION:
            raise UserError(
                f"--trt-precision {opts.precision}: the ONNX Runtime backend's TensorRT accelerator takes "
                "fp32 or fp16"
            )


def refuse_dcgan(model: str) -> None:
    """The generator's family, known once the checkpoint is read."""
    if model == "dcgan":
        raise UserError("--triton-repo serves image translators; a DCGAN generator exports to --onnx")


def model_names(model: str | None, direction: str) -> list[str]:
    """The repository's models: both directions of a CycleGAN run (the names `fastcycle serve` uses),
    else the one generator the file holds, under its direction."""
    return list(DIRECTIONS) if model == "cycle_gan" else [direction]


def check_target(path: Path) -> None:
    """Refuse to replace anything but nothing, an empty folder, or a repository this command wrote."""
    if path.is_dir():
        if (path / MARKER).is_file() or not any(path.iterdir()):
            return
        raise UserError(
            f"--triton-repo {path} is a folder that this command did not write (it has no {MARKER}); "
            "name a new or empty folder, or remove it"
        )
    if path.exists():
        raise UserError(f"--triton-repo {path} is a file, not a folder; name a folder")


def _graph_io(value, pb) -> tuple[str, int, list[int]]:
    """An ONNX graph input/output -> (name, Triton data type, dims without the batch axis; -1 dynamic)."""
    import onnx

    types = {onnx.TensorProto.FLOAT: pb.TYPE_FP32, onnx.TensorProto.FLOAT16: pb.TYPE_FP16}
    types[onnx.TensorProto.BFLOAT16] = pb.TYPE_BF16
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if len(dims) < 2 or dims[0] != -1 or tensor.elem_type not in types:
        raise UserError(f"the ONNX graph's {value.name!r} is not a batched float tensor; re-export it")
    return value.name, types[tensor.elem_type], dims[1:]  # the batch axis is Triton's max_batch_size


def model_config(name: str, graph, opts: TritonOptions):
    """The ModelConfig protobuf of one model whose exported ONNX graph is `graph` (an onnx.GraphProto)."""
    pb = require_model_config()
    platform, backend, filename = BACKENDS[opts.backend]
    config = pb.ModelConfig(name=name, platform=platform, backend=backend, max_batch_size=opts.batch[2])
    config.default_model_filename = filename
    inputs = [_graph_io(v, pb) for v in graph.input]
    for io_name, dtype, dims in inputs:
        config.input.add(name=io_name, data_type=dtype, dims=dims)
    for io_name, dtype, dims in (_graph_io(v, pb) for v in graph.output):
        config.output.add(name=io_name, data_type=dtype, dims=dims)
    preferred = opts.preferred_batch or tuple(sorted({opts.batch[1], opts.batch[2]}))
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = opts.queue_delay_us
    kind = pb.ModelInstanceGroup.KIND_GPU if opts.instance_kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=opts.instances)  # no `gpus`: that many on every GPU
    if opts.accelerator == "tensorrt":
        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = ACCELERATOR_PRECISION[opts.precision]
        image, _, (c, h, w) = inputs[0]  # (input_nc, H, W)
        if h > 0 and w > 0:
            # One TensorRT profile over --batch at the graph's size, as the .plan's; without it the
            # accelerator builds an engine for the first batch it sees and rebuilds it for a larger one.
            for key, n in zip(("min", "opt", "max"), opts.batch, strict=True):
                trt.parameters[f"trt_profile_{key}_shapes"] = f"{image}:{n}x{c}x{h}x{w}"
    return config


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


RepoBuild = Callable[[str, Path, Path], Path]  # (model name, version folder, scratch) -> its ONNX graph


def write_repo(
    path: str | Path, names: list[str], build: RepoBuild, opts: TritonOptions, about: dict
) -> Path:
    """The repository at `path`, made whole in a temporary folder beside it and renamed into place.
    build(name, version_folder, scratch) writes that model's file (model.onnx or model.plan) and returns
    the ONNX file it was exported as; scratch is removed before the rename. about: the marker's content."""
    import onnx

    path = Path(path)
    check_target(path)
    require_model_config()  # before any export: a missing tritonclient costs nothing

    def fill(tmp: Path) -> None:
        scratch = tmp / ".build"
        for name in names:
            version = tmp / name / VERSION
            version.mkdir(parents=True)
            graph = onnx.load(str(build(name, version, scratch)), load_external_data=False).graph
            (tmp / name / "config.pbtxt").write_text(config_text(model_config(name, graph, opts)))
        shutil.rmtree(scratch, ignore_errors=True)  # the TensorRT backend's ONNX graphs
        (tmp / MARKER).write_text(json.dumps(about | {"models": names}, indent=1, sort_keys=True) + "\n")

    return write_folder_atomic(path, fill, durable=True)
