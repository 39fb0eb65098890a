"""`fastcycle translate`: the translator (backend, an export of the run when the backend needs one, the
layer program for tiling; fastcycle.export.translator), for --html the other direction's, then the
streaming pipeline over the folder, image or video (fastcycle.translate).

This lives in the export layer, not beside the pipeline, because choosing a backend and exporting a run
on demand are this layer's, and an application may not import it (docs/ARCHITECTURE.md, "Layers"): the
pipeline stays one that runs any Translator.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastcycle.choices import DIRECTIONS
from fastcycle.errors import UserError

if TYPE_CHECKING:
    from fastcycle.translate import TranslateReport
    from fastcycle.translator import Translator

_UNITS = {"": 2**30, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


@dataclass
class TranslateRequest:
    """`fastcycle translate`'s flags (their defaults and help: fastcycle.cli)."""

    checkpoint: str  # a run, checkpoint or reference .pth, or an exported .onnx, .plan or .pt2 file
    backend: str  # auto, torch, onnxruntime, tensorrt or aoti
    input: str  # a folder of images and videos, one image or one video
    output: str
    direction: str
    batch_size: int
    device: str  # cuda, cuda:N, cpu or auto
    amp: bool
    workers: int  # decode/encode threads
    html: bool
    kernels: str  # auto, torch or triton
    generator_kw: dict[str, Any]  # the architecture of a reference .pth: netG, ngf, norm, dropout, ...
    # fastcycle.translator.TranslateOptions' fields, by the same names (memory_limit parsed here):
    memory_limit: str | None = None  # "8G", "512M", "1.5" (GiB); None: free device memory or half the RAM
    tile: int | None = None
    tile_overlap: int | None = None
    load_size: int | None = None
    max_side: int | None = None
    keep_size: bool = False
    output_bits: int | None = None
    scratch_dir: str | None = None
    frames_dir: str | None = None
    loader: str = "pyav"  # video decoding: pyav (FFmpeg on the CPU) or dali (NVDEC)


def parse_bytes(text: str) -> int:
    """'8G', '512M', '1.5GiB', '2' (GiB) -> bytes; UserError for anything else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m or float(m[1]) <= 0:
        raise UserError(f"--memory-limit {text!r} is not a size; use e.g. 8G, 512M or 1.5 (GiB)")
    return int(float(m[1]) * _UNITS[m[2]])


def _warn(line: str) -> None:
    print(line, file=sys.stderr)  # sys.stderr looked up now: a caller may have redirected it


def run_translate(
    req: TranslateRequest, say: Callable[[str], None] = print, warn: Callable[[str], None] = _warn
) -> TranslateReport:
    """Translate req.input into req.output; `say` gets the summary line, `warn` the decisions (whole or
    tiled), each skipped file and each kind of conversion."""
    from fastcycle.translate import translate_path

    translator, reverse = _open_translators(req, warn)
    report = translate_path(
        translator,
        req.input,
        req.output,
        req.batch_size,
        req.workers,
        html=req.html,
        reverse=reverse,
        frames_dir=req.frames_dir,
        loader=req.loader,
    )
    for path in report.skipped:
        warn(f"skipped unreadable image {path}")
    for note, count in sorted(report.converted.items()):
        warn(f"converted {count} image{'s' * (count != 1)}: {note}")
    rate = report.written / max(report.seconds, 1e-9)
    frames = f", {report.frames} video frames" if report.frames else ""
    say(
        f"translated {report.written} {'file' if report.frames else 'image'}{'s' * (report.written != 1)} "
        f"to {req.output} ({rate:.1f}/s{frames}, {translator.note}); skipped {len(report.skipped)}"
    )
    return report


def _open_translators(
    req: TranslateRequest, warn: Callable[[str], None]
) -> tuple[Translator, Translator | None]:
    """The translator of req.direction, and with --html on a torch CycleGAN the other direction's (for
    the reconstructions), both from one read of the checkpoint."""
    from fastcycle.export.backends import resolve_backend
    from fastcycle.export.translator import load_translator
    from fastcycle.trained import read_generator_file
    from fastcycle.translator import TranslateOptions

    options = {f.name: getattr(req, f.name) for f in dataclasses.fields(TranslateOptions)}
    if req.memory_limit is not None:
        options["memory_limit"] = parse_bytes(req.memory_limit)
    common = {"device": req.device, "amp": req.amp, "kernels": req.kernels, "say": warn, **options}
    source: Any = req.checkpoint
    torch_run = resolve_backend(req.backend, req.checkpoint) == "torch"
    if torch_run:
        source = read_generator_file(req.checkpoint, req.direction, req.generator_kw)
    translator = load_translator(
        source, req.direction, req.backend, architecture=req.generator_kw, max_batch=req.batch_size, **common
    )
    if not (req.html and torch_run and source.model == "cycle_gan"):
        return translator, None
    back = DIRECTIONS[1 - DIRECTIONS.index(req.direction)]
    return translator, load_translator(source, back, "torch", **common)
