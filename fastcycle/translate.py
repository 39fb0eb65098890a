"""Translate a folder of images with a trained generator (the reference's test.py, streaming).

Decode runs in a thread pool ahead of the model and PNG encoding in another behind it, each through a
bounded window, so memory stays flat on folders of any size while the device stays busy.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fastcycle.checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint, load_weights, run_config, safe_load
from fastcycle.config import TrainConfig
from fastcycle.data.folders import list_images, load_rgb, save_image
from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.errors import UserError
from fastcycle.models import build_generator

DIRECTIONS = ("AtoB", "BtoA")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "aoti")
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt", ".pt2": "aoti"}
# The reference's CycleGAN run folders name the A -> B generator G_A and the B -> A one G_B; pix2pix's is G.
_REFERENCE_FILES = {"AtoB": "latest_net_G_A.pth", "BtoA": "latest_net_G_B.pth"}
_REFERENCE_PIX2PIX = "latest_net_G.pth"


def load_generator(
    source: str | Path,
    direction: str = "AtoB",
    netG: str = "resnet_9blocks",
    ngf: int = 64,
    norm: str = "instance",
    dropout: bool = False,
    kernels: str = "torch",
) -> nn.Module:
    """A generator in eval mode from a fastcycle run folder or checkpoint, exported `.safetensors`
    weights, a reference run folder, or a reference `.pth` generator state dict (whose architecture the
    keyword arguments describe)."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction {direction!r} is not one of: {', '.join(DIRECTIONS)}")
    path = Path(source)
    if path.is_dir():
        if (path / CHECKPOINT_NAME).exists():
            path = path / CHECKPOINT_NAME
        elif (path / _REFERENCE_FILES[direction]).exists():
            path = path / _REFERENCE_FILES[direction]
        elif (path / _REFERENCE_PIX2PIX).exists() and direction == "AtoB":
            path = path / _REFERENCE_PIX2PIX
        else:
            raise UserError(f"{source} holds neither {CHECKPOINT_NAME} nor {_REFERENCE_FILES[direction]}")
    if path.suffix.lower() == ".safetensors":
        from fastcycle.export.weights import load_generator_file

        return load_generator_file(path, kernels).eval().requires_grad_(False)
    obj = safe_load(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state = load_checkpoint(path)
        net = generator_from_checkpoint(state, direction, kernels, str(path))
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        net = build_generator(netG, ngf=ngf, norm=norm, dropout=dropout, kernels=kernels)
        load_weights(net, obj, str(path))
    else:
        raise UserError(f"{path} is neither a fastcycle checkpoint nor a generator state dict")
    return net.eval().requires_grad_(False)


def generator_from_checkpoint(state: dict, direction: str, kernels: str, source: str) -> nn.Module:
    """The trained generator of a loaded fastcycle checkpoint: CycleGAN's G_AB or G_BA, pix2pix's G
    (one direction, the one it was trained for), DCGAN's G (noise -> image, for `fastcycle sample`)."""
    m = TrainConfig.from_dict(state["config"]).model
    if m.model == "cycle_gan":
        name = "G_AB" if direction == "AtoB" else "G_BA"
    elif direction != "AtoB":
        raise UserError(
            f"{source} is a {m.model} run, whose generator works one way (pix2pix: --direction at "
            "training time); drop --direction BtoA"
        )
    else:
        name = "G"
    net = build_generator(m.netG, ngf=m.ngf, norm=m.norm, dropout=m.dropout, kernels=kernels, nz=m.nz)
    # Prefer the EMA weights when the run kept them: they are what the run's samples showed.
    weights = state["model"]["ema"].get(name) or state["model"]["nets"][name]
    load_weights(net, weights, f"{source} ({name})")
    return net


def checkpoint_model(source: str | Path) -> str | None:
    """--model of a fastcycle run or checkpoint (cycle_gan, pix2pix, dcgan); None for other files."""
    config = run_config(source)
    return None if config is None else config["model"].get("model", "cycle_gan")


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


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad H and W up to a multiple (4 for ResNets, 2**downs for U-Nets); no resampling."""
    h, w = x.shape[2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return x.contiguous()


@torch.no_grad()
def _run(runner, images: list[np.ndarray], reverse=None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Same-size (H, W, 3) uint8 images -> translated uint8 images of the same size, and with a
    `reverse` runner (the other CycleGAN generator) their reconstructions."""
    h, w = images[0].shape[:2]
    x = torch.from_numpy(np.stack(images)).to(runner.device, non_blocking=True).permute(0, 3, 1, 2)
    x = to_model_range(x)  # (N, 3, H, W) in [-1, 1]
    y = runner(_pad(x, getattr(runner, "size_multiple", 4)))[:, :, :h, :w]
    out = list(to_uint8(y).permute(0, 2, 3, 1).cpu().numpy())
    if reverse is None:
        return out, None
    rec = reverse(_pad(y.to(reverse.device), getattr(reverse, "size_multiple", 4)))[:, :, :h, :w]
    return out, list(to_uint8(rec).permute(0, 2, 3, 1).cpu().numpy())


def open_runner(
    backend: str, model: str | Path, device: torch.device, amp_dtype=None, generator_kw: dict | None = None
):
    """The translate backend for `model`: a run/checkpoint/.pth (torch), .onnx, .plan or .pt2 file.
    `auto` picks by the file's suffix."""
    if backend == "auto":
        backend = BACKEND_BY_SUFFIX.get(Path(model).suffix.lower(), "torch")
    if backend == "torch":
        from fastcycle.export.runner import TorchRunner

        net = load_generator(model, **(generator_kw or {}))
        if hasattr(net, "nz"):
            raise UserError(f"{model} is a DCGAN: it makes images from noise; use `fastcycle sample`")
        return TorchRunner(net, device, amp_dtype)
    if backend == "onnxruntime":
        from fastcycle.export.ort import OrtRunner

        return OrtRunner(model, device)
    if backend == "tensorrt":
        from fastcycle.export.trt import TrtRunner

        return TrtRunner(model, device)
    from fastcycle.export.aoti import AotiRunner

    return AotiRunner(model, device)


def translate_folder(
    runner,
    input_dir: str | Path,
    output_dir: str | Path,
    batch_size: int = 8,
    workers: int = 4,
    html: bool = False,
    reverse=None,
) -> TranslateReport:
    """Translate every image under input_dir with `runner` (fastcycle.export.runner.Runner).

    html: also write <output>/index.html, the reference's results page: input | output thumbnails,
    plus the reconstruction when `reverse` (the other generator of a CycleGAN) is given, whose images
    go to <output>/reconstructed/."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
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
    skipped: list[str] = []
    written = 0
    gallery = None
    if html:
        from fastcycle.gallery import GalleryWriter

        columns = ["input", "output"] + (["reconstruction"] if reverse is not None else [])
        gallery = GalleryWriter(output_dir, f"fastcycle translate: {input_dir}", columns)
    rec_dir = output_dir / "reconstructed"
    t0 = time.perf_counter()
    window = max(2 * batch_size, 2 * workers)  # decoded-ahead images held at most
    with ThreadPoolExecutor(workers) as decode_pool, ThreadPoolExecutor(workers) as encode_pool:
        pending: deque[tuple[Path, Future]] = deque()
        writes: deque[Future] = deque()
        todo = iter(files)
        bar = tqdm(total=len(files), unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)

        def refill() -> None:
            while len(pending) < window:
                path = next(todo, None)
                if path is None:
                    return
                pending.append((path, decode_pool.submit(_decode, path)))

        def write(path: Path, out: np.ndarray, rec: np.ndarray | None) -> None:
            dst = output_path(path, input_dir, output_dir)
            save_image(out, dst)
            row = {"input": path, "output": dst}
            if rec is not None:
                row["reconstruction"] = output_path(path, input_dir, rec_dir)
                save_image(rec, row["reconstruction"])
            if gallery is not None:
                gallery.add(str(path.relative_to(input_dir)), row)

        def flush(paths: list[Path], images: list[np.ndarray]) -> None:
            nonlocal written
            outs, recs = _run(runner, images, reverse)
            for i, (path, out) in enumerate(zip(paths, outs, strict=True)):
                writes.append(encode_pool.submit(write, path, out, None if recs is None else recs[i]))
            while len(writes) > window:
                writes.popleft().result()
            written += len(paths)
            bar.update(len(paths))

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
                flush(paths, images)
                paths, images = [], []
            paths.append(path)
            images.append(img)
        if images:
            flush(paths, images)
        for fut in writes:
            fut.result()
        bar.close()
    if gallery is not None:
        gallery.close()
    return TranslateReport(written, skipped, time.perf_counter() - t0)
