"""Translate a folder of images and videos, one image or one video, with a trained generator (the
reference's test.py, streaming).

Images: decode runs in a thread pool ahead of the model and encoding in another behind it, each through
a bounded window, so memory stays flat on folders of any size while the device stays busy. Videos go
through fastcycle.video (PyAV decode and encode threads around the same model calls). The model is a
fastcycle.translator.Translator (any size: whole, in smaller batches or tiled; 8- or 16-bit; any channel
count), opened by the caller (fastcycle.export.translator.load_translator), so this pipeline imports no
backend.

Under torchrun each process translates its share of the inputs (fastcycle.ranks.shard); with
skip_existing an input whose output is already there is left alone, so a killed run can be run again.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastcycle.atomic import remove_leftovers
from fastcycle.data.folders import IMG_EXTENSIONS, list_images, read_image, write_image
from fastcycle.errors import UserError
from fastcycle.ranks import DistInfo, shard
from fastcycle.runner import Runner
from fastcycle.translator import Translator
from fastcycle.video import VIDEO_EXTENSIONS, is_video, translate_video
from fastcycle.video.probe import OUTPUT_FORMATS

_ONE_PROCESS = DistInfo()  # no torchrun: all the inputs are this process's


@dataclass
class TranslateReport:
    written: int  # images and videos written
    skipped: list[str]  # unreadable inputs
    seconds: float
    frames: int = 0  # video frames translated
    converted: Counter = field(default_factory=Counter)  # conversion note -> images ("RGBA to RGB")
    existing: int = 0  # inputs left alone because their output was already there (skip_existing)


def output_path(src: Path, input_dir: Path, output_dir: Path) -> Path:
    """input/sub/x.jpg -> output/sub/x.png (PNG: translations are not re-compressed lossily; 16-bit
    inputs stay 16-bit); input/sub/clip.mp4 -> output/sub/clip.mp4, in a .mkv when the input's container
    cannot hold the H.264 that fastcycle.video writes (.webm, .ts, .flv, ...)."""
    rel = output_dir / src.relative_to(input_dir)
    if is_video(src):
        return rel.with_suffix(src.suffix if src.suffix.lower() in OUTPUT_FORMATS else ".mkv")
    return rel.with_suffix(".png")


def _decode(path: Path) -> tuple[np.ndarray, list[str]] | None:
    try:
        return read_image(path)  # (H, W, C) uint8 or uint16, the conversions made
    except OSError:
        return None


def _as_translator(model: Translator | Runner) -> Translator:
    return model if isinstance(model, Translator) else Translator(model)


def translate_path(
    model: Translator | Runner,
    input: str | Path,
    output: str | Path,
    batch_size: int = 8,
    workers: int = 4,
    html: bool = False,
    reverse: Translator | Runner | None = None,
    frames_dir: str | Path | None = None,
    loader: str = "pyav",
    dist: DistInfo = _ONE_PROCESS,
    skip_existing: bool = False,
) -> TranslateReport:
    """Translate `input`: a folder (its images, and its videos one by one), one video file into the
    video `output`, or one image file into the image `output`. dist: under torchrun, a folder is shared
    among the ranks (one file is not: the command refuses it); skip_existing: leave inputs whose output
    exists."""
    src, dst = Path(input), Path(output)
    translator = _as_translator(model)
    if src.is_dir():
        return translate_folder(
            translator, src, dst, batch_size, workers, html, reverse, frames_dir, loader, dist, skip_existing
        )
    if not src.is_file():
        raise UserError(f"--input {src} does not exist; pass an image or video file or a folder of them")
    if not is_video(src) and not dst.suffix:
        dst = dst.with_suffix(".png")
    if skip_existing and dst.exists():
        return TranslateReport(0, [], 0.0, existing=1)
    t0 = time.perf_counter()
    if is_video(src):
        frames = _video(translator, src, dst, batch_size, frames_dir, loader)
        return TranslateReport(1, [], time.perf_counter() - t0, frames)
    return _one_image(translator, src, dst, t0)


def _video(translator: Translator, src: Path, dst: Path, batch_size: int, frames_dir, loader: str) -> int:
    report = translate_video(
        src,
        dst,
        translator.translate_arrays,
        batch_size=batch_size,
        frames_dir=frames_dir,
        loader=loader,
        device=translator.runner.device,
    )
    translator.say(f"{src} -> {dst}: {report.note}")
    return report.frames


def _one_image(translator: Translator, src: Path, dst: Path, t0: float) -> TranslateReport:
    if src.resolve() == dst.resolve():
        raise UserError(f"--output {dst} is the input image itself; choose another file")
    decoded = _decode(src)
    if decoded is None:
        raise UserError(f"{src} is not a readable image or video; check the file")
    image, notes = decoded
    out = translator.translate_arrays([image])[0]
    _write(out, dst)
    return TranslateReport(1, [], time.perf_counter() - t0, converted=Counter(notes))


def _write(arr: np.ndarray, dst: Path) -> None:
    try:
        write_image(arr, dst)
    except ValueError as e:  # a 16-bit translation for a format that holds 8 bits
        raise UserError(f"{e}; write a .png or .tif, or pass --output-bits 8") from None


def translate_folder(
    model: Translator | Runner,
    input_dir: str | Path,
    output_dir: str | Path,
    batch_size: int = 8,
    workers: int = 4,
    html: bool = False,
    reverse: Translator | Runner | None = None,
    frames_dir: str | Path | None = None,
    loader: str = "pyav",
    dist: DistInfo = _ONE_PROCESS,
    skip_existing: bool = False,
) -> TranslateReport:
    """Translate every image under input_dir with `model` (a Translator, or a bare Runner run whole),
    then every video (fastcycle.video: frames_dir, loader).

    html: also write <output>/index.html, the reference's results page: input | output thumbnails,
    plus the reconstruction when `reverse` (the other CycleGAN generator) is given, whose images
    go to <output>/reconstructed/.

    dist: under torchrun, translate this rank's share of the inputs (no progress bar but rank 0's).
    skip_existing: leave the inputs whose output file exists (it is whole: outputs are written
    atomically) and remove what a killed run left half-written beside the others'."""
    translator = _as_translator(model)
    back = None if reverse is None else _as_translator(reverse)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    inputs = _input_files(input_dir, output_dir, batch_size)
    mine, existing = _share(inputs, input_dir, output_dir, dist, skip_existing)
    files, videos = [f for f in mine if not is_video(f)], [f for f in mine if is_video(f)]
    skipped: list[str] = []
    converted: Counter = Counter()
    written = 0
    gallery = _gallery(input_dir, output_dir, back is not None) if html else None
    rec_dir = output_dir / "reconstructed"

    def write(path: Path, out: np.ndarray, rec: np.ndarray | None) -> None:
        dst = output_path(path, input_dir, output_dir)
        _write(out, dst)
        row = {"input": path, "output": dst}
        if rec is not None:
            row["reconstruction"] = output_path(path, input_dir, rec_dir)
            _write(rec, row["reconstruction"])
        if gallery is not None:
            gallery.add(str(path.relative_to(input_dir)), row)

    t0 = time.perf_counter()
    window = max(2 * batch_size, 2 * workers)  # decoded-ahead images held at most
    with ThreadPoolExecutor(workers) as decode_pool, ThreadPoolExecutor(workers) as encode_pool:
        writes: deque[Future] = deque()
        quiet = None if dist.is_main else True  # None: tqdm's own choice (no bar when not a terminal)
        bar = tqdm(total=len(files), unit="img", file=sys.stderr, dynamic_ncols=True, disable=quiet)
        for paths, images, notes in _batches(files, decode_pool, window, batch_size, skipped, bar):
            converted.update(notes)
            outs = translator.translate_arrays(images)
            recs = None if back is None else back.translate_arrays(outs)
            for i, (path, out) in enumerate(zip(paths, outs, strict=True)):
                writes.append(encode_pool.submit(write, path, out, None if recs is None else recs[i]))
            while len(writes) > window:
                writes.popleft().result()
            written += len(paths)
            bar.update(len(paths))
        for fut in writes:
            fut.result()
        bar.close()
    if gallery is not None:
        gallery.close()
    frames = _videos(translator, videos, input_dir, output_dir, batch_size, frames_dir, loader)
    seconds = time.perf_counter() - t0
    return TranslateReport(written + len(videos), skipped, seconds, frames, converted, existing)


def _videos(translator, videos, input_dir, output_dir, batch_size, frames_dir, loader) -> int:
    """The folder's videos one by one; the frames translated."""
    frames = 0
    for video in videos:
        # Frames of sub/clip.mp4 go to <frames_dir>/sub/clip/: videos of one name in two folders apart.
        into = None if frames_dir is None else Path(frames_dir) / video.relative_to(input_dir).parent
        frames += _video(
            translator, video, output_path(video, input_dir, output_dir), batch_size, into, loader
        )
    return frames


def _gallery(input_dir: Path, output_dir: Path, reconstructions: bool):
    from fastcycle.gallery import GalleryWriter

    columns = ["input", "output"] + (["reconstruction"] if reconstructions else [])
    return GalleryWriter(output_dir, f"fastcycle translate: {input_dir}", columns)


def _share(
    inputs: list[Path], input_dir: Path, output_dir: Path, dist: DistInfo, skip_existing: bool
) -> tuple[list[Path], int]:
    """This rank's inputs, and how many of its share were left alone because their output exists."""
    # Shared out before looking at the outputs: ranks start at different moments, and a rank that saw
    # the outputs another had written meanwhile would share out a different list, leaving inputs to no one.
    mine = shard(inputs, dist)
    if not skip_existing:
        return mine, 0
    outputs = {f: output_path(f, input_dir, output_dir) for f in mine}
    remove_leftovers(outputs.values())
    todo = [f for f in mine if not outputs[f].exists()]
    return todo, len(mine) - len(todo)


def _input_files(input_dir: Path, output_dir: Path, batch_size: int) -> list[Path]:
    """The images and videos to translate, sorted, from one walk of the folder; UserError for a
    missing or empty input folder, an output folder inside it, a batch size below 1, or two inputs that
    would be written to the same output file."""
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist")
    if batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    src, dst = input_dir.resolve(), output_dir.resolve()
    if dst == src or src in dst.parents:
        raise UserError(
            f"output folder {output_dir} is inside the input folder; choose one outside {input_dir}"
        )
    files = list_images(input_dir, extensions=IMG_EXTENSIONS + VIDEO_EXTENSIONS)
    if not files:
        raise UserError(f"{input_dir} holds no images or videos")
    outputs: dict[Path, Path] = {}
    for f in files:
        out = output_path(f, input_dir, output_dir)
        clash = outputs.setdefault(out, f)
        if clash != f:
            raise UserError(f"{clash} and {f} would both be written as {out}; rename one")
    return files


def _batches(
    files: list[Path], pool: ThreadPoolExecutor, window: int, batch_size: int, skipped: list[str], bar: tqdm
) -> Iterator[tuple[list[Path], list[np.ndarray], list[str]]]:
    """(paths, images, conversion notes): runs of up to batch_size same-size decoded images, in file
    order. Decoding runs up to `window` files ahead in `pool`; an unreadable file goes to `skipped` (and
    counts on `bar`)."""
    pending: deque[tuple[Path, Future]] = deque()
    todo = iter(files)

    def refill() -> None:
        while len(pending) < window:
            path = next(todo, None)
            if path is None:
                return
            pending.append((path, pool.submit(_decode, path)))

    refill()
    paths, images, notes = [], [], []
    while pending:
        path, fut = pending.popleft()
        refill()
        decoded = fut.result()
        if decoded is None:
            skipped.append(str(path))
            bar.update(1)
            continue
        img, made = decoded
        if images and (
            img.shape != images[0].shape or img.dtype != images[0].dtype or len(images) == batch_size
        ):
            yield paths, images, notes
            paths, images, notes = [], [], []
        paths.append(path)
        images.append(img)
        notes += made
    if images:
        yield paths, images, notes
