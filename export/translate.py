"""`fastcycle translate`: the translator (backend, an export of the run when the backend needs one, the
layer program for tiling; fastcycle.export.translator), for --html the other direction's, then the
streaming pipeline over the folder, image or video (fastcycle.translate).

This lives in the export layer, not beside the pipeline, because choosing a backend and exporting a run
on demand are this layer's, and an application may not import it (docs/ARCHITECTURE.md, "Layers"): the
pipeline stays one that runs any Translator.

Under torchrun every rank opens its own translator on its own device (fastcycle.ranks) and translates
its share of the inputs; rank 0 gathers the ranks' reports and prints the one summary.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcycle.choices import DIRECTIONS
from fastcycle.errors import UserError

if TYPE_CHECKING:
    import torch

    from fastcycle.ranks import DistInfo
    from fastcycle.translate import TranslateReport
    from fastcycle.translator import Translator

_UNITS = {"": 2**30, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


@dataclass(kw_only=True)
class SizeFlags:
    """fastcycle.translator.TranslateOptions' fields as the flags of translate and eval give them, by
    the same names, less output_bits, which each command sets its own way."""

    memory_limit: str | None = None  # "8G", "512M", "1.5" (GiB); None: free device memory or half the RAM
    tile: int | None = None
    tile_overlap: int | None = None
    load_size: int | None = None
    max_side: int | None = None
    keep_size: bool = False
    scratch_dir: str | None = None

    def translate_options(self, output_bits: int | None) -> dict[str, Any]:
        """TranslateOptions' keyword arguments: these fields with --memory-limit parsed to bytes, and
        output_bits. Named from TranslateOptions, so a field it gains and these lack fails here."""
        from fastcycle.translator import TranslateOptions

        names = {f.name for f in dataclasses.fields(TranslateOptions)} - {"output_bits"}
        options = {name: getattr(self, name) for name in names}
        if self.memory_limit is not None:
            options["memory_limit"] = parse_bytes(self.memory_limit)
        return options | {"output_bits": output_bits}


@dataclass
class TranslateRequest(SizeFlags):
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
    output_bits: int | None = None  # 8 or 16 bits per channel; None: the input's
    frames_dir: str | None = None
    loader: str = "pyav"  # video decoding: pyav (FFmpeg on the CPU) or dali (NVDEC)
    skip_existing: bool = False  # leave inputs whose output exists: a killed run's re-run


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
    tiled), each skipped file and each kind of conversion. Under torchrun, rank 0 says and warns for all
    the ranks and returns their report merged; the others print nothing but errors."""
    from fastcycle.ranks import from_env, gather_to_main, rank_device, result_group
    from fastcycle.translate import translate_path

    dist = from_env()
    _check_flags(req, dist)
    device = rank_device(req.device, dist)
    if dist.enabled and device.type == "cuda":
        import torch

        torch.cuda.set_device(device)  # what asks for "the" GPU (a library's default stream) gets this one
    quiet = warn if dist.is_main else _silent
    with result_group(dist):  # every rank checks the flags and the inputs the same way: none waits alone
        translator, reverse = _open_translators(req, device, quiet)
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
            dist=dist,
            skip_existing=req.skip_existing,
        )
        reports = gather_to_main(report, dist)
    if reports is None:
        return report
    merged = _merge(reports)
    for path in merged.skipped:
        warn(f"skipped unreadable image {path}")
    for note, count in sorted(merged.converted.items()):
        warn(f"converted {count} image{'s' * (count != 1)}: {note}")
    say(_summary(req, reports, merged, translator.note))
    return merged


def _silent(line: str) -> None:
    """A non-zero rank's decisions and notes: rank 0 says the same for its own share."""


def _check_flags(req: TranslateRequest, dist: DistInfo) -> None:
    """The refusals, the same on every rank and before the ranks meet."""
    if dist.enabled and Path(req.input).is_file():
        # Refused rather than left to rank 0: its errors (an unreadable file, a bad stream) would be its
        # alone, and the ranks must stop on the same error, not some of them wait for the one that stopped.
        raise UserError(
            f"--input {req.input} is one file, which torchrun cannot share out: pass a folder, or run "
            "without torchrun"
        )
    if req.html and dist.enabled:
        raise UserError(
            "--html writes one results page from one process: translate under torchrun without --html, "
            "or run without torchrun for the page"
        )
    if req.html and req.skip_existing:
        raise UserError(
            "--html lists the images this run translates and --skip-existing leaves out those already "
            "there: drop one of the two"
        )


def _merge(reports: list[TranslateReport]) -> TranslateReport:
    """The ranks' reports as one: the counts summed, the time the slowest rank's."""
    from fastcycle.translate import TranslateReport

    return TranslateReport(
        written=sum(r.written for r in reports),
        skipped=[path for r in reports for path in r.skipped],
        seconds=max(r.seconds for r in reports),
        frames=sum(r.frames for r in reports),
        converted=sum((r.converted for r in reports), Counter()),
        existing=sum(r.existing for r in reports),
    )


def _summary(
    req: TranslateRequest, reports: list[TranslateReport], merged: TranslateReport, note: str
) -> str:
    """translated 10 images to out (4.1/s; <note>); skipped 0 unreadable. Under torchrun: "on 2 ranks",
    the rate in all (all files over the slowest rank's time) and each rank's; with --skip-existing, the
    outputs left as they were."""
    kind = "file" if merged.frames else "image"
    rate = f"{merged.written / max(merged.seconds, 1e-9):.1f}/s"
    ranks = ""
    if len(reports) > 1:
        ranks = f" on {len(reports)} ranks"
        each = ", ".join(f"{r.written / max(r.seconds, 1e-9):.1f}" for r in reports)
        rate = f"{rate} in all, per rank {each}/s"
    frames = f", {merged.frames} video frames" if merged.frames else ""
    existing = f", {merged.existing} already translated" if req.skip_existing else ""
    return (
        f"translated {merged.written} {kind}{'s' * (merged.written != 1)} to {req.output}{ranks} "
        f"({rate}{frames}; {note}); skipped {len(merged.skipped)} unreadable{existing}"
    )


def _open_translators(
    req: TranslateRequest, device: torch.device, warn: Callable[[str], None]
) -> tuple[Translator, Translator | None]:
    """The translator of req.direction, and with --html on a torch CycleGAN the other direction's (for
    the reconstructions), both from one read of the checkpoint."""
    from fastcycle.export.backends import resolve_backend
    from fastcycle.export.translator import load_translator
    from fastcycle.trained import read_generator_file

    options = req.translate_options(req.output_bits)
    common = {"device": device, "amp": req.amp, "kernels": req.kernels, "say": warn, **options}
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
