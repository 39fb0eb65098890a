"""The inference backends by name (`fastcycle translate --backend`): each opens a fastcycle.runner.Runner.

torch runs a trained generator (fastcycle.trained) eagerly; onnxruntime, tensorrt and aoti run the
files `fastcycle export` writes. `auto` picks by the file's suffix. Only the chosen backend's module is
imported (ONNX Runtime, TensorRT and Inductor each take seconds to load), and this module imports no
torch, so the CLI can read BACKENDS for its --help.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcycle.errors import UserError

if TYPE_CHECKING:
    import torch

    from fastcycle.runner import Runner
    from fastcycle.trained import GeneratorFile

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "aoti")
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt", ".pt2": "aoti"}


def is_exported(model: str | Path) -> bool:
    """An exported .onnx, .plan/.engine or .pt2 file, by its suffix (not a run, checkpoint or .pth)."""
    return Path(model).suffix.lower() in BACKEND_BY_SUFFIX


def resolve_backend(backend: str, model: str | Path) -> str:
    """`auto` -> the backend of the file's suffix, torch for anything else (a run, a .pth)."""
    return BACKEND_BY_SUFFIX.get(Path(model).suffix.lower(), "torch") if backend == "auto" else backend


def open_runner(
    backend: str,
    model: str | Path | GeneratorFile,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    generator_kw: dict[str, Any] | None = None,
) -> Runner:
    """The `backend` runner of `model`: a run/checkpoint/.pth/.safetensors or a GeneratorFile already
    read (torch), or an .onnx, .plan or .pt2 file. generator_kw: direction, kernels, compile_backend
    (torch.compile's backend, or None: eager) and a reference .pth's architecture, for torch."""
    backend = resolve_backend(backend, model) if isinstance(model, str | Path) else "torch"
    if backend == "torch":
        from fastcycle.runner import TorchRunner
        from fastcycle.trained import read_generator_file

        kw = dict(generator_kw or {})
        direction, kernels = kw.pop("direction", "AtoB"), kw.pop("kernels", "torch")
        compile_backend = kw.pop("compile_backend", None)
        source = read_generator_file(model, direction, kw) if isinstance(model, str | Path) else model
        net = source.generator(direction, kernels)
        if net.spec.noise:
            raise UserError(f"{source.path} is a DCGAN: it makes images from noise; use `fastcycle sample`")
        return TorchRunner(net, device, amp_dtype, compile_backend)
    if backend == "onnxruntime":
        from fastcycle.export.ort import OrtRunner

        return OrtRunner(model, device)
    if backend == "tensorrt":
        from fastcycle.export.trt import TrtRunner

        return TrtRunner(model, device)
    from fastcycle.export.aoti import AotiRunner

    return AotiRunner(model, device)
