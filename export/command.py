"""`fastcycle export`: a trained generator -> ONNX, TensorRT engine, AOTInductor package and/or a Triton
model repository, each followed by a parity check against the PyTorch generator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fastcycle.choices import DIRECTIONS
from fastcycle.errors import UserError
from fastcycle.export.onnx import export_onnx, metadata_for
from fastcycle.export.parity import check_parity, parity_inputs

if TYPE_CHECKING:
    from fastcycle.export.triton_repo import TritonOptions
    from fastcycle.trained import GeneratorFile


@dataclass
class ExportRequest:
    checkpoint: str
    direction: str = DIRECTIONS[0]
    onnx: str | None = None
    fp16: bool = False
    dynamic_hw: bool = False
    size: int = 256
    trt: str | None = None
    batch: str = "1:8:32"
    trt_precision: str = "fp16"
    timing_cache: str | None = None
    aoti: str | None = None
    safetensors: str | None = None
    device: str = "auto"
    images: str | None = None
    generator_kw: dict | None = None  # the architecture of a reference .pth
    # A Triton model repository (export/triton_repo.py; the fields are TritonOptions' with triton_ before).
    triton_repo: str | None = None
    triton_backend: str = "onnxruntime"
    triton_accelerator: str = "none"
    triton_preferred_batch: str | None = None  # "8,32"; None: --batch's OPT and MAX
    triton_queue_delay_us: int = 100
    triton_instances: int = 1
    triton_instance_kind: str = "gpu"


Say = Callable[[str], None]  # where the lines for the user go
Inputs = list[tuple[str, torch.Tensor]]  # the parity check's (label, batch) pairs


def _default_images(config: dict | None, checkpoint: str) -> Path | None:
    """Real images for the parity check: the run's testA (or trainA) when its dataset is at hand."""
    if not config:
        return None
    run_dir = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    root = config["data"].get("data") or run_dir / "demo_data"  # a demo run keeps its data inside
    for sub in ("testA", "trainA", "test", "train"):  # train/: pix2pix A|B images, still real pixels
        if (Path(root) / sub).is_dir():
            return Path(root) / sub
    return None


def run_export(req: ExportRequest, say: Say = print, source: GeneratorFile | None = None) -> list[Path]:
    """Write what `req` asks for; returns the written paths. Raises UserError on bad input or parity.
    source: req.checkpoint already read (fastcycle.trained.read_generator_file), not to be read again."""
    from fastcycle.runtime import resolve_device
    from fastcycle.trained import read_generator_file

    if not (req.onnx or req.trt or req.aoti or req.safetensors or req.triton_repo):
        raise UserError(
            "nothing to export: pass --onnx OUT.onnx, --trt OUT.plan, --aoti OUT.pt2, --safetensors OUT "
            "and/or --triton-repo DIR"
        )
    if req.size <= 0 or req.size % 4:
        raise UserError(
            f"--size {req.size} must be a positive multiple of 4 (the generator downsamples twice)"
        )
    device = resolve_device(req.device)
    triton = _triton_options(req, device) if req.triton_repo else None  # its flags, before the read
    if source is None:
        source = read_generator_file(req.checkpoint, req.direction, req.generator_kw)  # the one read of it
    net = source.generator(req.direction)  # eval, no grad
    config = source.config  # None for a reference .pth or .safetensors
    inputs = _inputs(req, net, config)
    written = []
    if req.safetensors:
        written.append(_write_safetensors(req, net, source, say))
    onnx_path = req.onnx or (str(Path(req.trt).with_suffix(".onnx")) if req.trt else None)
    if onnx_path:
        written.append(_write_onnx(req, net, onnx_path, config, inputs, device, say))
    if req.trt:
        written.append(_write_trt(req, net, onnx_path, inputs, device, say))
    if req.aoti:
        written.append(_write_aoti(req, net, config, inputs, device, say))
    if triton is not None:
        written.append(_write_triton_repo(req, triton, source, device, say))
    return written


def _inputs(req: ExportRequest, net: torch.nn.Module, config: dict | None) -> Inputs:
    """The parity check's inputs: noise for a DCGAN generator, else images at req.size.
    UserError for what this generator's spec rules out."""
    if net.spec.noise:  # a DCGAN generator: checked on noise, no images
        if req.trt or req.aoti or req.dynamic_hw:
            raise UserError("a DCGAN generator exports to --onnx or --safetensors (noise in, 64x64 out) only")
        g = torch.Generator().manual_seed(0)
        return [("random noise", torch.randn(8, net.nz, 1, 1, generator=g))]
    multiple = net.spec.size_multiple
    if req.size % multiple:
        raise UserError(
            f"--size {req.size}: this generator ({type(net).__name__}) needs a multiple of {multiple}"
        )
    if req.aoti and req.dynamic_hw and not net.spec.resnet:
        raise UserError(
            f"--aoti --dynamic-hw covers the ResNet generators; export this {type(net).__name__} "
            "at a fixed --size, or use --onnx --dynamic-hw"
        )
    from fastcycle.trained import image_channels

    nc = image_channels(net)[0]
    return parity_inputs(req.size, req.images or _default_images(config, req.checkpoint), nc=nc)


def _write_safetensors(req: ExportRequest, net: torch.nn.Module, source: GeneratorFile, say: Say) -> Path:
    from fastcycle.trained import load_generator, save_generator

    path = save_generator(net, req.safetensors, source.arch, req.direction)
    back = load_generator(path).state_dict().values()
    same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), back, strict=True))
    if not same:
        raise UserError(f"{path} does not read back as the weights written; please report it")
    say(f"wrote {path} (safetensors weights, read back identical)")
    return path


def _write_onnx(
    req: ExportRequest,
    net: torch.nn.Module,
    onnx_path: str,
    config: dict | None,
    inputs: Inputs,
    device: torch.device,
    say: Say,
) -> Path:
    from fastcycle.export.ort import OrtRunner

    meta = metadata_for(config, req.direction)
    path = export_onnx(net, onnx_path, fp16=req.fp16, dynamic_hw=req.dynamic_hw, size=req.size, metadata=meta)
    say(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    say(check_parity(net, OrtRunner(path, device), inputs, "fp16" if req.fp16 else "fp32", "onnxruntime"))
    return path


def _write_trt(
    req: ExportRequest, net: torch.nn.Module, onnx_path: str, inputs: Inputs, device: torch.device, say: Say
) -> Path:
    from fastcycle.export.trt import TrtRunner, build_engine, parse_batch_range

    batch = parse_batch_range(req.batch)
    cache = req.timing_cache or str(Path(req.trt).with_suffix(".timing-cache"))
    path = build_engine(
        onnx_path,
        req.trt,
        precision=req.trt_precision,
        batch=batch,
        hw=(req.size, req.size),
        timing_cache=cache,
    )
    say(f"wrote {path} (batch {batch[0]}..{batch[2]}, {req.trt_precision}; timing cache {cache})")
    trt_inputs = [(label, x[: batch[2]]) for label, x in inputs]
    say(check_parity(net, TrtRunner(path, device), trt_inputs, req.trt_precision, "tensorrt"))
    return path


def _write_aoti(
    req: ExportRequest,
    net: torch.nn.Module,
    config: dict | None,
    inputs: Inputs,
    device: torch.device,
    say: Say,
) -> Path:
    from fastcycle.export.aoti import AotiRunner, export_aoti
    from fastcycle.export.trt import parse_batch_range  # generic MIN:OPT:MAX parsing, no TensorRT

    max_batch = parse_batch_range(req.batch)[2]
    example = torch.zeros(2, inputs[0][1].shape[1], req.size, req.size, device=device)  # (N, input_nc, H, W)
    meta = metadata_for(config, req.direction)
    path = export_aoti(
        net.to(device),
        req.aoti,
        example=example,
        max_batch=max_batch,
        dynamic_hw=req.dynamic_hw,
        metadata=meta,
    )
    say(f"wrote {path} (AOTInductor, {device}, batch 1..{max_batch})")
    say(check_parity(net, AotiRunner(path, device), inputs, "fp32", "aoti"))
    return path


def _triton_options(req: ExportRequest, device: torch.device) -> TritonOptions:
    """--triton-* flags -> TritonOptions, checked before anything is read or written (TensorRT's gate
    included: its error comes before minutes of export, and nothing is left behind)."""
    from fastcycle.export.triton_repo import (
        TritonOptions,
        check_options,
        check_target,
        parse_preferred,
        require_model_config,
    )
    from fastcycle.export.trt import parse_batch_range, require_tensorrt

    batch = parse_batch_range(req.batch)
    opts = TritonOptions(
        backend=req.triton_backend,
        accelerator=req.triton_accelerator,
        precision=req.trt_precision,
        batch=batch,
        preferred_batch=parse_preferred(req.triton_preferred_batch, batch[2]),
        queue_delay_us=req.triton_queue_delay_us,
        instances=req.triton_instances,
        instance_kind=req.triton_instance_kind,
    )
    check_options(opts, req.dynamic_hw)
    check_target(Path(req.triton_repo))
    require_model_config()
    if opts.backend == "tensorrt":
        require_tensorrt()
        if device.type != "cuda":  # the plan's parity check runs it, on CUDA only
            raise UserError(
                f"--triton-backend tensorrt builds and checks its engine on CUDA, not on {device}"
            )
    return opts


def _write_triton_repo(
    req: ExportRequest, opts: TritonOptions, source: GeneratorFile, device: torch.device, say: Say
) -> Path:
    """Every generator of `source` (read once) exported into the repository, each checked for parity."""
    from fastcycle.export.ort import OrtRunner
    from fastcycle.export.triton_repo import model_names, refuse_dcgan, write_repo
    from fastcycle.version import __version__

    refuse_dcgan(source.model)
    repo, lines = Path(req.triton_repo), []  # said once the repository is in place

    def build(name: str, version: Path, scratch: Path) -> Path:
        net = source.generator(name)  # a model is named by its direction
        inputs = _inputs(replace(req, direction=name), net, source.config)
        folder = version if opts.backend == "onnxruntime" else scratch / name  # a plan's graph: scratch
        meta = metadata_for(source.config, name)
        path = export_onnx(
            net, folder / "model.onnx", fp16=req.fp16, dynamic_hw=req.dynamic_hw, size=req.size, metadata=meta
        )
        runner = OrtRunner(path, device)
        lines.append(
            f"{name}: {check_parity(net, runner, inputs, 'fp16' if req.fp16 else 'fp32', 'onnxruntime')}"
        )
        if opts.backend == "tensorrt":
            lines.append(
                f"{name}: {_repo_plan(req, opts, net, path, version / 'model.plan', inputs, device)}"
            )
        return path

    about = {"fastcycle": __version__, "checkpoint": str(source.path), "backend": opts.backend}
    names = model_names(source.model, req.direction)
    write_repo(repo, names, build, opts, about)
    for line in lines:
        say(line)
    models = ", ".join(names)
    say(f"wrote Triton model repository {repo}: {models} ({opts.backend}, max_batch_size {opts.batch[2]})")
    return repo


def _repo_plan(
    req: ExportRequest,
    opts: TritonOptions,
    net: torch.nn.Module,
    onnx_path: Path,
    plan: Path,
    inputs: Inputs,
    device: torch.device,
) -> str:
    """A model's TensorRT engine at the repository's batch range and --size; its parity line."""
    from fastcycle.export.trt import TrtRunner, build_engine

    repo = Path(req.triton_repo)
    cache = req.timing_cache or str(repo.with_name(f"{repo.name}.timing-cache"))  # outside the repository
    hw = (req.size, req.size)
    build_engine(onnx_path, plan, precision=req.trt_precision, batch=opts.batch, hw=hw, timing_cache=cache)
    trt_inputs = [(label, x[: opts.batch[2]]) for label, x in inputs]
    return check_parity(net, TrtRunner(plan, device), trt_inputs, req.trt_precision, "tensorrt")
