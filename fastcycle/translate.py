"""Translate a folder of images with a trained generator (the reference's test.py, streaming).

Decode runs in a thread pool ahead of the model and PNG encoding in another behind it, each through a
bounded window, so memory stays flat on folders of any size while the device stays busy. The model is
any fastcycle.runner.Runner (torch, ONNX Runtime, TensorRT, AOTInductor); the caller opens it
(fastcycle.export.backends.open_runner), so this pipeline imports no backend.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fastcycle.data.folders import list_images, load_rgb, save_image
from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.errors import UserError
from fastcycle.runner import Runner, run_padded


@dataclass
class TranslateReport:
    written: int
    skipped: list[str]
    seconds: float


def output_path(src: Path, input_dir: Path, output_dir: Path) -> Path:
    """input/sub/x.jpg -> output/sub/x.png (PNG: translations are not re-compressed lossily)."""
    return (output_dir / src.relative_to(input_dir)).with_suffix(".png")


def _decode(path: Path) -> np.ndarray | None:
    try:
        return np.asarray(load_rgb(path))  # (H, W, 3) uint8
    except OSError:
        return None


@torch.no_grad()
def _run(
    runner: Runner, images: list[np.ndarray], reverse: Runner | None = None
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Same-size (H, W, 3) uint8 images -> translated uint8 images of the same size, and with a
    `reverse` runner (the other CycleGAN generator) their reconstructions."""
    x = torch.from_numpy(np.stack(images)).to(runner.device, non_blocking=True).permute(0, 3, 1, 2)
    x = to_model_range(x)  # (N, 3, H, W) in [-1, 1]
    y = run_padded(runner, x, runner.size_multiple)
    out = list(to_uint8(y).permute(0, 2, 3, 1).cpu().numpy())
    if reverse is None:
        return out, None
    rec = run_padded(reverse, y.to(reverse.device), reverse.size_multiple)
    return out, list(to_uint8(rec).permute(0, 2, 3, 1).cpu().numpy())


def translate_folder(
    runner: Runner,
    input_dir: str | Path,
    output_dir: str | Path,
    batch_size: int = 8,
    workers: int = 4,
    html: bool = False,
    reverse: Runner | None = None,
) -> TranslateReport:
    """Translate every image under input_dir with `runner`.

    html: also write <output>/index.html, the reference's results page: input | output thumbnails,
    plus the reconstruction when `reverse` (the other generator of a CycleGAN) is given, whose images
    go to <output>/reconstructed/."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    files = _input_files(input_dir, output_dir, batch_size)
    skipped: list[str] = []
    written = 0
    gallery = None
    if html:
        from fastcycle.gallery import GalleryWriter

        columns = ["input", "output"] + (["reconstruction"] if reverse is not None else [])
        gallery = GalleryWriter(output_dir, f"fastcycle translate: {input_dir}", columns)
    rec_dir = output_dir / "reconstructed"

    def write(path: Path, out: np.ndarray, rec: np.ndarray | None) -> None:
        dst = output_path(path, input_dir, output_dir)
        save_image(out, dst)
        row = {"input": path, "output": dst}
        if rec is not None:
            row["reconstruction"] = output_path(path, input_dir, rec_dir)
            save_image(rec, row["reconstruction"])
        if gallery is not None:
            gallery.add(str(path.relative_to(input_dir)), row)

    t0 = time.perf_counter()
    window = max(2 * batch_size, 2 * workers)  # decoded-ahead images held at most
    with ThreadPoolExecutor(workers) as decode_pool, ThreadPoolExecutor(workers) as encode_pool:
        writes: deque[Future] = deque()
        bar = tqdm(total=len(files), unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)
        for paths, images in _batches(files, decode_pool, window, batch_size, skipped, bar):
            outs, recs = _run(runner, images, reverse)
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
    return TranslateReport(written, skipped, time.perf_counter() - t0)


def _input_files(input_dir: Path, output_dir: Path, batch_size: int) -> list[Path]:
    """The images to translate, sorted; UserError for a missing or empty input folder, an output folder
    inside it, a batch size below 1, or two inputs that would be written to the same output file."""
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist")
    if batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    src, dst = input_dir.resolve(), output_dir.resolve()
    if dst == src or src in dst.parents:
        raise UserError(
            f"output folder {output_dir} is inside the input folder; choose one outside {input_dir}"
        )
    files = list_images(input_dir)
    if not files:
        raise UserError(f"{input_dir} holds no images")
    outputs: dict[Path, Path] = {}
    for f in files:
        out = output_path(f, input_dir, output_dir)
        clash = outputs.setdefault(out, f)
        if clash != f:
            raise UserError(f"{clash} and {f} would both be written as {out}; rename one")
    return files


def _batches(
    files: list[Path], pool: ThreadPoolExecutor, window: int, batch_size: int, skipped: list[str], bar: tqdm
) -> Iterator[tuple[list[Path], list[np.ndarray]]]:
    """(paths, images): runs of up to batch_size same-size decoded images, in file order. Decoding runs
    up to `window` files ahead in `pool`; an unreadable file goes to `skipped` (and counts on `bar`)."""
    pending: deque[tuple[Path, Future]] = deque()
    todo = iter(files)

    def refill() -> None:
        while len(pending) < window:
            path = next(todo, None)
            if path is None:
                return
            pending.append((path, pool.submit(_decode, path)))

    refill()
    paths, images = [], []
    while pending:
        path, fut = pending.popleft()
        refill()
        img = fut.result()
        if img is None:
            skipped.append(str(path))
            bar.update(1)
            continue
        if images and (img.shape != images[0].shape or len(images) == batch_size):
            yield paths, images
            paths, images = [], []
        paths.append(path)
        images.append(img)
    if images:
        yield paths, images
