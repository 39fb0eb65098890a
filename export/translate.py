"""`fastcycle translate`: the backend, an export of the run when the backend needs one, the runner (and
for --html the other direction's), then the streaming pipeline over the folder.

This lives in the export layer, not beside the pipeline (fastcycle.translate), because choosing a
backend and exporting a run on demand (fastcycle.export.cache) are this layer's, and an application may
not import it (docs/ARCHITECTURE.md, "Layers"): the pipeline stays one that runs any Runner.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastcycle.choices import DIRECTIONS

if TYPE_CHECKING:
    import torch

    from fastcycle.runner import Runner
    from fastcycle.translate import TranslateReport


@dataclass
class TranslateRequest:
    """`fastcycle translate`'s flags (their defaults and help: fastcycle.cli)."""

    checkpoint: str  # a run, checkpoint or reference .pth, or an exported .onnx, .plan or .pt2 file
    backend: str  # auto, torch, onnxruntime, tensorrt or aoti
    input: str
    output: str
    direction: str
    batch_size: int
    device: str  # cuda, cuda:N, cpu or auto
    amp: bool
    workers: int  # decode/encode threads
    html: bool
    kernels: str  # auto, torch or triton
    generator_kw: dict[str, Any]  # the architecture of a reference .pth: netG, ngf, norm, dropout


def _warn(line: str) -> None:
    print(line, file=sys.stderr)  # sys.stderr looked up now: a caller may have redirected it


def run_translate(
    req: TranslateRequest, say: Callable[[str], None] = print, warn: Callable[[str], None] = _warn
) -> TranslateReport:
    """Translate req.input into req.output; `say` gets the summary line, `warn` each skipped file."""
    from fastcycle.runtime import resolve_device, resolve_kernels, resolve_precision
    from fastcycle.translate import translate_folder

    device = resolve_device(req.device)
    precision = resolve_precision(req.amp, "auto", device)
    kernels, _ = resolve_kernels(req.kernels, device)
    runner, reverse = _open_runners(req, device, precision.dtype, kernels)
    report = translate_folder(
        runner, req.input, req.output, req.batch_size, req.workers, html=req.html, reverse=reverse
    )
    for path in report.skipped:
        warn(f"skipped unreadable image {path}")
    rate = report.written / max(report.seconds, 1e-9)
    extra = f", {kernels} kernels" if runner.name == "torch" else ""
    say(
        f"translated {report.written} images to {req.output} ({rate:.1f} images/s, {runner.note}{extra}); "
        f"skipped {len(report.skipped)}"
    )
    return report


def _open_runners(
    req: TranslateRequest, device: torch.device, dtype: torch.dtype | None, kernels: str
) -> tuple[Runner, Runner | None]:
    """The runner of req.direction, and with --html on a torch CycleGAN the other direction's (for the
    reconstructions). A checkpoint is read once for both, or for a backend that runs exported files
    exported beside itself (fastcycle.export.cache)."""
    from fastcycle.export.backends import open_runner, resolve_backend
    from fastcycle.export.cache import cached_export, needs_export
    from fastcycle.trained import read_generator_file

    kw = req.generator_kw | {"direction": req.direction, "kernels": kernels}
    model, backend = req.checkpoint, resolve_backend(req.backend, req.checkpoint)
    if needs_export(backend, model):
        model = cached_export(
            model, backend, req.direction, device, req.generator_kw, max(32, req.batch_size)
        )
    elif backend == "torch":
        model = read_generator_file(req.checkpoint, req.direction, req.generator_kw)
    runner = open_runner(req.backend, model, device, dtype, kw)
    if not (req.html and runner.name == "torch" and model.model == "cycle_gan"):
        return runner, None
    back = DIRECTIONS[1 - DIRECTIONS.index(req.direction)]
    return runner, open_runner("torch", model, device, dtype, kw | {"direction": back})
