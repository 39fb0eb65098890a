"""`fastcycle.load_translator`: a trained generator, on any backend, as a fastcycle.translator.Translator.

It opens the runner (exporting a run on demand for the backends that run exported files:
fastcycle.export.cache) and the generator's layer program for memory estimates and tiled inference:
from the module for torch, from the ONNX graph for ONNX Runtime (whose tiles then run on ONNX Runtime
too), from the checkpoint for an AOTInductor package or a TensorRT engine made from a run (their tiles
run on torch). A bare .pt2 or .plan holds no program: its images always run whole.

This lives in the export layer because choosing and opening a backend is this layer's
(docs/ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from fastcycle.errors import UserError
from fastcycle.translator import TranslateOptions, Translator

if TYPE_CHECKING:
    from fastcycle.trained import GeneratorFile


def load_translator(
    source: str | os.PathLike | GeneratorFile,
    direction: str = "AtoB",
    backend: str = "auto",
    device: str | torch.device = "auto",
    amp: bool = False,
    *,
    compile: bool | str = False,
    kernels: str = "auto",
    architecture: dict[str, Any] | None = None,
    max_batch: int = 32,
    say: Callable[[str], None] | None = None,
    **options: Any,
) -> Translator:
    """A Translator for `source`'s `direction` generator.

    source: a fastcycle run folder or checkpoint, a .safetensors generator, a reference .pth (its
    architecture in `architecture`: netG, ngf, norm, dropout, input_nc, output_nc), or an exported .onnx,
    .plan or .pt2 file. backend: torch, onnxruntime, tensorrt, aoti, or auto (by the file's suffix, torch
    for a run or checkpoint). device: cpu, cuda, cuda:N or auto. amp: bf16 autocast (torch) where the
    device runs it fast. compile: torch.compile the generator (torch backend only) with Inductor (True)
    or the named torch.compile backend, dynamic shapes: the first call of a batch of one and of a larger
    batch each compile once. options: TranslateOptions' fields (memory_limit, tile, tile_overlap,
    load_size, max_side, keep_size, output_bits, scratch_dir). max_batch: the batch bound of an
    AOTInductor package made from a run. say: where its one-line decisions go (default: stderr).
    """
    from fastcycle.runtime import resolve_device, resolve_kernels, resolve_precision

    device = device if isinstance(device, torch.device) else resolve_device(str(device))
    precision = resolve_precision(amp, "auto", device)
    kernels, _ = resolve_kernels(kernels, device)
    try:
        opts = TranslateOptions(**options)
    except TypeError as e:
        raise TypeError(f"load_translator: {e}; the options are TranslateOptions' fields") from None
    compile_backend = None if not compile else "inductor" if compile is True else str(compile)
    runner, program, segments = _open(
        source,
        direction,
        backend,
        device,
        precision.dtype,
        kernels,
        compile_backend,
        architecture,
        max_batch,
        say,
    )
    return Translator(runner, opts, program=program, segments=segments, say=say)


def _open(source, direction, backend, device, amp_dtype, kernels, compile_backend, arch, max_batch, say):
    """(runner, program, segments) for load_translator."""
    from fastcycle.export.backends import is_exported, open_runner, resolve_backend
    from fastcycle.export.cache import cached_export, needs_export
    from fastcycle.tiling import program_from_module
    from fastcycle.trained import GeneratorFile, read_generator_file

    arch = dict(arch or {})
    kw = arch | {"direction": direction, "kernels": kernels, "compile_backend": compile_backend}
    if isinstance(source, GeneratorFile):
        runner = open_runner("torch", source, device, amp_dtype, kw)
        return runner, program_from_module(runner.net), None
    backend = resolve_backend(backend, source)
    if compile_backend is not None and backend != "torch":
        raise UserError(
            f"--compile compiles the torch backend's generator; the {backend} backend runs an engine already "
            "compiled: drop --compile, or use --backend torch"
        )
    exported = needs_export(backend, source)  # a run or checkpoint for a backend that runs exports
    model: Any = source
    if exported:
        extra = {"say": say} if say is not None else {}
        model = cached_export(source, backend, direction, device, arch, max(32, max_batch), **extra)
    elif backend == "torch":
        if is_exported(source):
            raise UserError(f"{source} is an exported file; open it with backend='auto' or its own backend")
        model = read_generator_file(source, direction, arch)
    runner = open_runner(backend, model, device, amp_dtype, kw)
    if runner.name == "torch":
        return runner, program_from_module(runner.net), None
    if runner.name == "onnxruntime":
        if not runner.image_to_image:
            raise UserError(f"{model} is a DCGAN: it makes images from noise; use `fastcycle sample`")
        from fastcycle.export.tiled_ort import OrtSegments, program_from_onnx

        return runner, program_from_onnx(model), OrtSegments(runner.session.get_providers())
    if not exported:
        return runner, None, None  # a bare .pt2 or .plan: no program, its images run whole
    # A package made from a run tiles on torch, with the program of the checkpoint's generator.
    generator = read_generator_file(source, direction, arch).generator(direction)
    return runner, program_from_module(generator), None
