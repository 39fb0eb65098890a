"""`fastcycle eval`: FID and KID of a trained generator's translations against the real images of the
target domain (G_AB(testA) against testB, G_BA(testB) against testA), or of one folder of images against
another (--real/--fake).

The generator runs through load_translator on any backend (an exported .onnx, or a run exported on
demand for --backend onnxruntime), so what is measured is what will be deployed, not only the
checkpoint; choosing a backend is the export layer's, hence this module's place (docs/ARCHITECTURE.md,
"Layers"). Translations never touch the disk: each batch of translated uint8 arrays goes straight into
the Inception features and is dropped, so memory holds one batch of images and the (N, 2048) features
whatever N. The real side's features come from fastcycle.quality.realsets' cache when the same images
were measured before with the same weights.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcycle.errors import UserError
from fastcycle.export.translate import SizeFlags

if TYPE_CHECKING:
    import numpy as np

    from fastcycle.export.eval_generators import Generator
    from fastcycle.quality.inception import InceptionV3
    from fastcycle.quality.weights import Weights

DECODE_THREADS = 4  # image decoding ahead of the networks (PIL releases the GIL while it decodes)


@dataclass
class EvalRequest(SizeFlags):
    """`fastcycle eval`'s flags (their defaults and help: fastcycle.cli_generators)."""

    checkpoint: str | None = None  # a run, checkpoint, reference .pth, .safetensors or an exported file
    data: str | None = None  # with checkpoint: the dataset folder holding testA/ and testB/
    real: str | None = None  # without checkpoint: the real images ...
    fake: str | None = None  # ... and the generated ones, measured against them
    direction: str | None = None  # only this generator; None: both of a CycleGAN, else the file's one
    backend: str = "auto"  # auto, torch, onnxruntime, tensorrt or aoti
    device: str = "auto"  # where the generator and the Inception network run
    amp: bool = False  # the generator under bf16 autocast (the features are float32 regardless)
    kernels: str = "auto"  # the generator on torch's or the fused Triton kernels
    batch_size: int = 16  # images per generator call and per Inception call
    eval_images: int = 0  # the first N images of each set, by name; 0: all
    inception_weights: str | None = None  # None: fastcycle.quality.weights.find's search
    no_cache: bool = False  # neither read nor write the real sets' cached features
    kid_subsets: int | None = None  # None: fastcycle.quality.distances' (torch-fidelity's) default
    kid_subset_size: int | None = None  # None: likewise
    json_path: str | None = None  # None: default_json_path(request)
    generator_kw: dict[str, Any] = field(default_factory=dict)  # a reference .pth's architecture


@dataclass(frozen=True)
class Pair:
    """One measurement: the images `fake` (translated first when `generator` is set) against `real`."""

    key: str  # "AtoB", "BtoA" or "folders": its entry in the JSON's results
    label: str  # the printed line's
    fake_from: str  # the folder of the images translated, or of the fake images themselves
    real_from: str  # the folder of the real images
    fake: list[Path]
    real: list[Path]
    generator: Generator | None = None  # translates `fake` first; None: the fake images are files


def _warn(line: str) -> None:
    print(line, file=sys.stderr)  # sys.stderr looked up now: a caller may have redirected it


def default_json_path(req: EvalRequest) -> Path:
    """RUN/eval.json for a run folder, NAME.eval.json beside a file, ./eval.json for two folders."""
    if req.checkpoint is None:
        return Path("eval.json")
    path = Path(req.checkpoint)
    return path / "eval.json" if path.is_dir() else path.with_name(f"{path.stem}.eval.json")


def run_eval(
    req: EvalRequest, say: Callable[[str], None] = print, warn: Callable[[str], None] = _warn
) -> dict:
    """Measure, `say` one line per pair and where the JSON went, write the JSON; returns what it holds.
    Every check that can fail on the user's input runs before the first feature is computed, and the
    JSON is written whole or not at all: a failed run leaves an earlier file as it was."""
    from fastcycle.atomic import write_atomic
    from fastcycle.export.cache import file_sha256
    from fastcycle.export.eval_generators import find_generators, open_translator
    from fastcycle.quality.weights import find, load_inception
    from fastcycle.runtime import resolve_device
    from fastcycle.version import __version__

    start = time.perf_counter()
    _check(req)
    out = Path(req.json_path) if req.json_path else default_json_path(req)
    if req.checkpoint is None:
        pairs = [_folders_pair(req)]
    else:
        if not Path(req.data).is_dir():
            raise UserError(
                f"--data {req.data}: no such folder; pass the dataset folder holding testA/ and testB/"
            )
        pairs = [_generator_pair(req, g) for g in find_generators(req)]
    weights = find(req.inception_weights)
    device = resolve_device(req.device)
    for pair in pairs:  # before the first feature: an export made now, or its one-line refusal
        if pair.generator is not None:
            open_translator(pair.generator, req, device, warn)
    net = load_inception(weights, device)
    results, hashes = {}, {}
    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="eval-decode") as pool:
        for pair in pairs:
            result = _measure(pair, net, weights, req, pool)
            if (g := pair.generator) is not None:
                if g.path not in hashes:  # a CycleGAN checkpoint holds both generators: hashed once
                    hashes[g.path] = file_sha256(g.path)
                result["generator"] = g.describe(hashes[g.path])
            say(result.pop("line"))
            results[pair.key] = result
    report = {
        "fastcycle_version": __version__,
        "checkpoint": req.checkpoint,
        "data": req.data,
        "results": results,
        "inception": {"path": str(weights.path), "sha256": weights.sha256},
        "device": str(device),
        "features_precision": "fp32",
        "eval_images": req.eval_images,
        "seconds": round(time.perf_counter() - start, 3),
    }
    try:
        write_atomic(out, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    except OSError as e:  # the lines above are printed: only the file is lost
        raise UserError(
            f"cannot write {out} ({e.strerror or e}); pass --json PATH somewhere writable"
        ) from None
    cached = ", ".join(
        f"{Path(r['real']).name} {'from the cache' if r['real_features_cached'] else 'computed'}"
        for r in results.values()
    )
    say(f"wrote {out} ({report['seconds']:.1f} s; real features: {cached})")
    return report


def _check(req: EvalRequest) -> None:
    """The flags' one-line refusals."""
    folders = req.real is not None or req.fake is not None
    if req.checkpoint is not None and folders:
        raise UserError(
            "--checkpoint measures a generator's translations and --real/--fake two folders of images: pass "
            "one of the two"
        )
    if req.checkpoint is not None and req.data is None:
        raise UserError("--checkpoint needs --data, the dataset folder holding testA/ and testB/")
    if req.checkpoint is None:
        if req.data is not None:
            raise UserError(
                "--data goes with --checkpoint; to compare two folders of images use --real/--fake"
            )
        if req.real is None or req.fake is None:
            raise UserError("pass --checkpoint RUN --data DIR, or --real DIR --fake DIR")
    for name, value, least in (
        ("batch-size", req.batch_size, 1),
        ("eval-images", req.eval_images, 0),
        ("kid-subsets", req.kid_subsets, 1),
        ("kid-subset-size", req.kid_subset_size, 2),
    ):
        if value is not None and value < least:
            raise UserError(f"--{name} must be at least {least}, got {value}")


def _folders_pair(req: EvalRequest) -> Pair:
    from fastcycle.quality.realsets import images_in

    fake, real = images_in(req.fake, req.eval_images), images_in(req.real, req.eval_images)
    return Pair("folders", f"{req.fake} vs {req.real}", req.fake, req.real, fake, real)


def _generator_pair(req: EvalRequest, g: Generator) -> Pair:
    """AtoB: the generator's translations of testA against testB; BtoA: of testB against testA."""
    from fastcycle.quality.realsets import images_in

    source, target = (Path(req.data) / f"test{side}" for side in (g.direction[0], g.direction[-1]))
    fake, real = images_in(source, req.eval_images), images_in(target, req.eval_images)
    return Pair(g.direction, g.label, str(source), str(target), fake, real, g)


def _measure(
    pair: Pair, net: InceptionV3, weights: Weights, req: EvalRequest, pool: ThreadPoolExecutor
) -> dict:
    """The pair's FID and KID (and the printed line, under "line")."""
    from fastcycle.quality.distances import KID_SUBSET_SIZE, KID_SUBSETS, compare
    from fastcycle.quality.features import inception_features
    from fastcycle.quality.realsets import real_features

    start = time.perf_counter()
    batches = _decoded(pair.fake, req.batch_size, pool)
    if pair.generator is None:
        images: Iterator[np.ndarray] = (image for batch in batches for image in batch)
    else:  # each batch translated when the extractor asks for its images: one batch in memory at a time
        translate = pair.generator.translator.translate_arrays
        images = (image for batch in batches for image in translate(batch))
    fake = inception_features(images, net, req.batch_size)
    real, cached = real_features(pair.real, net, weights.sha256, cache=not req.no_cache)
    subsets = req.kid_subsets or KID_SUBSETS
    quality = compare(fake, real, subsets=subsets, subset_size=req.kid_subset_size or KID_SUBSET_SIZE)
    return {
        "line": quality.line(pair.label),
        "label": pair.label,
        "fake_from": pair.fake_from,
        "real": pair.real_from,
        **quality.as_dict(),
        "kid_subsets": subsets,
        "real_features_cached": cached,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _decoded(paths: list[Path], batch: int, pool: ThreadPoolExecutor) -> Iterator[list[np.ndarray]]:
    """The images, `batch` at a time, decoded in `pool` one batch ahead: the next batch decodes while the
    networks run on this one (read one after the other on the main thread, the decoding would add its
    time to theirs)."""
    ahead: list[Future] = []
    for i in range(0, len(paths), batch):
        this, ahead = ahead, [pool.submit(_read, p) for p in paths[i : i + batch]]
        if this:
            yield [f.result() for f in this]
    if ahead:
        yield [f.result() for f in ahead]


def _read(path: Path) -> np.ndarray:
    from fastcycle.quality.realsets import read_images

    return next(read_images([path]))
