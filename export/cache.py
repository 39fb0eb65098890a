"""Exports made on demand: `fastcycle translate --backend onnxruntime|aoti` given a run or a .pt/.pth file.

The artifact is written beside the checkpoint, named by direction and a key: the SHA-256 of the
checkpoint file together with the export options (backend, device, batch bound, fastcycle's version).
A later translate with the same checkpoint and options finds it there and reuses it; a new checkpoint
(the run went on) or other options make a new one, which replaces the older exports of that direction
and backend. Each is written atomically and only after its parity check passed, so a half-written or
wrong export is never found. TensorRT engines are built for one image size, so for them the one line
says the exact `fastcycle export` command instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError
from fastcycle.export.backends import is_exported

SUFFIX = {"onnxruntime": ".onnx", "aoti": ".pt2"}
PREFIX = "export-"  # export-AtoB-<key>.onnx
_TRIES = 3  # the checkpoint of a live run may be replaced while it is exported: hash it again


def needs_export(backend: str, model: str | os.PathLike) -> bool:
    """True when `backend` runs exported files but `model` is a run folder or a checkpoint."""
    return backend in ("onnxruntime", "aoti", "tensorrt") and not is_exported(model)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()  # checkpoints are replaced by rename: a new file is a new inode
    return st.st_ino, st.st_size, st.st_mtime_ns


def cached_export(
    source: str | os.PathLike,
    backend: str,
    direction: str,
    device: torch.device,
    generator_kw: dict,
    max_batch: int = 32,
    say=lambda line: print(line, file=sys.stderr),
) -> Path:
    """The `backend` export of `source`'s `direction` generator, from the folder's cache or made now."""
    from fastcycle.trained import resolve_source
    from fastcycle.version import __version__

    source = Path(source)
    if not source.exists():
        raise UserError(f"checkpoint {source} does not exist; pass a run folder, checkpoint.pt or a .pth")
    path = resolve_source(source, direction)
    if backend == "tensorrt":
        plan = path.parent / f"{PREFIX}{direction}.plan"
        raise UserError(
            "--backend tensorrt runs an engine built for one image size: build it with `fastcycle export "
            f"--checkpoint {source} --direction {direction} --trt {plan} --size 256` and translate 256x256 "
            f"images with --checkpoint {plan}"
        )
    options = {"backend": backend, "direction": direction, "version": __version__, "arch": generator_kw}
    if backend == "aoti":  # a package runs on the device type it was compiled for, up to its batch bound
        options |= {"device": device.type, "max_batch": max_batch}
    for _ in range(_TRIES):
        before = _identity(path)
        key = hashlib.sha256(json.dumps([file_sha256(path), options], sort_keys=True).encode()).hexdigest()
        out = path.parent / f"{PREFIX}{direction}-{key[:16]}{SUFFIX[backend]}"
        if out.is_file():
            say(f"export: reusing {out} (made from this {path.name} with these options)")
            return out
        made = _export(path, out, backend, direction, device, generator_kw, max_batch, say)
        if _identity(path) == before:
            for old in path.parent.glob(f"{PREFIX}{direction}-*{SUFFIX[backend]}"):
                if old != out:
                    old.unlink(missing_ok=True)  # an export of an older checkpoint or other options
            return made
        made.unlink(missing_ok=True)  # the run saved a new checkpoint meanwhile: export that one
    raise UserError(f"{path} changed during each of {_TRIES} exports; translate a copy of it instead")


def _export(path, out, backend, direction, device, generator_kw, max_batch, say) -> Path:
    from fastcycle.export.command import ExportRequest, run_export
    from fastcycle.trained import read_generator_file

    source = read_generator_file(path, direction, generator_kw)  # the one read of the checkpoint
    spec = source.generator(direction).spec
    if spec.noise:
        raise UserError(f"{path} is a DCGAN: it makes images from noise; use `fastcycle sample`")
    if backend == "aoti" and not spec.resnet:
        raise UserError(
            f"--backend aoti needs a package for any image size, which AOTInductor builds for the ResNet "
            f"generators only, not this {source.arch['netG']}; use --backend onnxruntime or torch"
        )
    size = max(64, spec.size_multiple)  # parity-check size: small, and a multiple of what the generator needs

    # Exported to write_atomic's temporary file, which is renamed to `out` only once run_export's parity
    # check passed: a found export is a checked one. Its name ends in the backend's suffix, as `out` does.
    def export_to(tmp: Path) -> None:
        req = ExportRequest(
            str(path),
            direction,
            dynamic_hw=True,  # translate feeds every image at its own size
            size=size,
            batch=f"1:{min(8, max_batch)}:{max_batch}",
            device=str(device),
            generator_kw=generator_kw,
            **{"onnx" if backend == "onnxruntime" else "aoti": str(tmp)},
        )
        run_export(req, say=lambda line: say(f"export: {line}"), source=source)

    write_atomic(out, export_to, suffix=out.suffix)
    say(f"export: {out} ready; later translates of this checkpoint reuse it")
    return out
