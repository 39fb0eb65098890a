"""The generators `fastcycle eval` measures: which ones a source holds, the way each maps, and each opened
as a Translator on the requested backend (fastcycle.export.translator.load_translator).

A CycleGAN (a fastcycle cycle_gan run, or a reference implementation's run folder with latest_net_G_A.pth
and latest_net_G_B.pth) holds two: G_AB, measured as AtoB (testA translated, against testB), and G_BA,
measured as BtoA. Any other source holds one generator, measured the way it maps: a pix2pix or distilled
run's --direction (from its training config, in the checkpoint or an ONNX export of it), else the
direction an ONNX or safetensors export records, else AtoB; --direction says it for a file that records
nothing (a reference .pth, a .pt2 or a .plan).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcycle.choices import CYCLE_GENERATORS, DIRECTIONS
from fastcycle.errors import UserError

if TYPE_CHECKING:
    import torch

    from fastcycle.translator import Translator


@dataclass
class Generator:
    """One generator to measure; `translator` once opened (open_translator)."""

    direction: str  # the way it maps: AtoB translates testA and is compared with testB
    load: str  # the direction load_translator opens (a one-generator source's is AtoB)
    label: str  # the printed line's, e.g. "AtoB: G_AB(testA) vs testB"
    path: Path  # the file holding it
    source: Any  # what load_translator opens: a GeneratorFile already read (torch), else the path
    translator: Translator | None = None

    def describe(self, sha256: str) -> dict[str, str]:
        """What the JSON records of it: the file and its hash, and what ran it."""
        runner = self.translator.runner
        return {
            "path": str(self.path),
            "sha256": sha256,
            "backend": runner.name,
            "runner": runner.note,
            "precision": runner.precision,
        }


@dataclass(frozen=True)
class _Holding:
    two: bool  # a CycleGAN: G_AB and G_BA
    direction: str  # a one-generator source's way
    certain: bool  # that way comes from a training config (a --direction against it is refused)
    source: Any  # what load_translator opens: a GeneratorFile already read (torch), else the path


def find_generators(req: Any) -> list[Generator]:
    """The generators to measure, not yet opened (a fastcycle checkpoint is read here, once for both).
    req: an EvalRequest (typed Any: fastcycle.export.evaluate imports this module)."""
    from fastcycle.trained import resolve_source

    held = _holding(req)
    if held.two:
        chosen = [(d, d, f"{d}: {CYCLE_GENERATORS[d]}({_test(d, 0)}) vs {_test(d, 1)}") for d in _asked(req)]
    else:
        if held.certain and req.direction not in (None, held.direction):
            raise UserError(
                f"{req.checkpoint} was trained {held.direction}: its generator maps "
                f"{_test(held.direction, 0)[-1]} to {_test(held.direction, 1)[-1]}; drop --direction "
                f"{req.direction}"
            )
        d = req.direction or held.direction
        chosen = [(d, "AtoB", f"{d}: G({_test(d, 0)}) vs {_test(d, 1)}")]
    return [
        Generator(d, load, label, resolve_source(req.checkpoint, load), held.source)
        for d, load, label in chosen
    ]


def open_translator(g: Generator, req: Any, device: torch.device, warn: Callable[[str], None]) -> None:
    """g.translator: on req's backend, device and precision (a run exported first where it needs to be)."""
    from fastcycle.export.translator import load_translator

    g.translator = load_translator(
        g.source,
        g.load,
        req.backend,
        device=device,
        amp=req.amp,
        kernels=req.kernels,
        architecture=req.generator_kw,
        max_batch=req.batch_size,
        say=warn,
        # 8-bit translations whatever the input: FID's images are 8-bit
        **req.translate_options(output_bits=8),
    )


def _asked(req: Any) -> tuple[str, ...]:
    return (req.direction,) if req.direction else DIRECTIONS


def _test(direction: str, side: int) -> str:
    """testA or testB: the folder translated (side 0) or compared with (side 1)."""
    return f"test{direction[0] if side == 0 else direction[-1]}"


def _holding(req: Any) -> _Holding:
    from fastcycle.checkpoint import CHECKPOINT_NAME
    from fastcycle.export.backends import is_exported, resolve_backend
    from fastcycle.trained import read_generator_file, resolve_source

    path = Path(req.checkpoint)
    if not path.exists():
        raise UserError(
            f"checkpoint {path} does not exist; pass a run folder, a checkpoint, a reference .pth, a "
            ".safetensors file or an exported .onnx, .plan or .pt2"
        )
    if is_exported(path):
        return _Holding(False, *_recorded(path), str(path))
    if path.is_dir() and not (path / CHECKPOINT_NAME).exists():  # a reference implementation's run folder
        resolve_source(path, "AtoB")  # a folder holding no generator: one line here
        return _Holding(_resolves(path, "BtoA"), "AtoB", False, str(path))
    file = read_generator_file(path, "AtoB", req.generator_kw)
    source = file if resolve_backend(req.backend, path) == "torch" else str(path)
    if file.kind == "checkpoint":
        one_way = _config_direction(file.config)
        return _Holding(one_way is None, one_way or "AtoB", one_way is not None, source)
    if file.kind == "safetensors":
        return _Holding(False, *_recorded(file.path), source)
    return _Holding(False, "AtoB", False, source)


def _resolves(folder: Path, direction: str) -> bool:
    from fastcycle.trained import resolve_source

    try:
        resolve_source(folder, direction)
    except UserError:
        return False
    return True


def _config_direction(config: dict | None) -> str | None:
    """A one-way run's --direction (pix2pix, a distilled student) from its training config; None for a
    CycleGAN or without a config."""
    if config is None or config["model"].get("model", "cycle_gan") == "cycle_gan":
        return None
    return config["data"].get("direction", DIRECTIONS[0])


def _recorded(path: Path) -> tuple[str, bool]:
    """(the way a one-generator file maps, whether a training config says so)."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from fastcycle.export.onnx import read_metadata

        meta = read_metadata(path)
        one_way = _config_direction(
            json.loads(meta["fastcycle.config"]) if "fastcycle.config" in meta else None
        )
        return (one_way, True) if one_way else (meta.get("fastcycle.direction", DIRECTIONS[0]), False)
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("fastcycle.direction", DIRECTIONS[0]), False
    return DIRECTIONS[0], False
