"""The training loaders: decode throughput, and the training step fed by each next to synthetic data.

    pytest benchmarks/bench_loaders.py                      # on a GPU: 256x256 JPEG folders, real step
    pytest benchmarks/bench_loaders.py --benchmark-disable  # anywhere: tiny folders, each case once

The JPEG folders are generated at benchmark time (smooth random images, quality 90, the size of
horse2zebra's 256x256 files). `test_loader` times batches leaving each loader, on the device and
synchronised, in `loader_images_per_s` (A and B images both count). `test_train_step` runs the CycleGAN
step (resnet_9blocks, bf16, channels-last, batch 4 on a GPU) fed by each loader, and by the same two
batches already on the device: that "synthetic" case is the ceiling a loader can at best match, and
`fraction_of_synthetic` says how close each one gets. The torch loader runs with 8 and 16 workers.
"""

import itertools
import time

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.conftest import DEVICE, SMOKE, environment, rounds, synchronize
from fastcycle.config import DataConfig, apply_overrides
from fastcycle.data.contract import Batch, LoaderSpec
from fastcycle.data.loader import build_loader
from fastcycle.data.scan import scan_domain
from fastcycle.presets import cyclegan
from fastcycle.runtime import resolve_precision
from fastcycle.train import CycleGAN
from fastcycle.train.env import ModelEnv

IMAGES = 24 if SMOKE else 1024  # per domain
SIZE = 48 if SMOKE else 256  # the stored JPEGs
LOAD, CROP = (40, 32) if SMOKE else (286, 256)  # the reference's horse2zebra settings
BATCH = 2 if SMOKE else 4
STEPS = 4 if SMOKE else 50  # batches per timed round
LOADERS = (
    [("torch", 0), ("dali", 2), ("gpu-cache", 2)]
    if SMOKE
    else [
        ("torch", 8),
        ("torch", 16),
        ("dali", 4),
        ("gpu-cache", 8),
    ]
)
IDS = [f"{name}-{workers}w" for name, workers in LOADERS]
_synthetic_pairs_per_s = []  # set by the synthetic case, which runs first


@pytest.fixture(scope="module")
def jpeg_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader_bench")
    rng = np.random.default_rng(0)
    for domain in ("trainA", "trainB"):
        (root / domain).mkdir()
        for i in range(IMAGES):
            # Smooth content: noise would make JPEGs (and their decoding) unrealistically heavy.
            small = rng.integers(0, 256, (SIZE // 16, SIZE // 16, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            img.save(root / domain / f"{i:05d}.jpg", quality=90)
    return root


def _loader(root, work, name, workers):
    scans = [scan_domain(root, d) for d in ("trainA", "trainB")]
    spec = LoaderSpec(*scans, "resize_and_crop", LOAD, CROP, True, False, 0, BATCH, DEVICE, True)
    t0 = time.perf_counter()
    loader, _ = build_loader(DataConfig(data=str(root), loader=name, num_workers=workers), spec, work)
    return loader, time.perf_counter() - t0


def _stream(loader):
    """Batches without end: epoch after epoch."""
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def _median(benchmark):
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats else None


@pytest.mark.parametrize(("name", "workers"), LOADERS, ids=IDS)
def test_loader(benchmark, jpeg_folders, tmp_path, name, workers):
    loader, setup_s = _loader(jpeg_folders, tmp_path, name, workers)
    batches = _stream(loader)

    def pull():
        for _ in range(STEPS):
            next(batches)
        synchronize()  # every loader's last copy or kernel is queued on the current stream

    pull()  # worker start-up, DALI's first batches, allocator warm-up
    benchmark.pedantic(pull, rounds=rounds(10), iterations=1)
    seconds = _median(benchmark)
    info = {"loader": name, "workers": workers, "batch": BATCH, "load_size": LOAD, "crop_size": CROP}
    info |= {"images_per_domain": IMAGES, "setup_s": setup_s, "env": environment()}
    if seconds:
        info["loader_images_per_s"] = 2 * BATCH * STEPS / seconds
    benchmark.extra_info.update(info)


def _model():
    if SMOKE:
        overrides = {"netG": "resnet_6blocks", "ngf": 4, "ndf": 4, "n_layers_D": 2}
    else:
        overrides = {"amp": True, "channels_last": True}
    cfg = apply_overrides(cyclegan(), {"batch_size": BATCH, "crop_size": CROP, **overrides})
    return CycleGAN(cfg, ModelEnv(DEVICE, resolve_precision(cfg.runtime.amp, "auto", DEVICE)))


@pytest.mark.parametrize(("name", "workers"), [("synthetic", 0), *LOADERS], ids=["synthetic", *IDS])
def test_train_step(benchmark, jpeg_folders, tmp_path, name, workers):
    model = _model()
    if name == "synthetic":  # the same two batches, already on the device: the ceiling
        shape = (BATCH, 3, CROP, CROP)
        A, B = (torch.rand(shape, device=DEVICE).mul_(2).sub_(1) for _ in range(2))
        cl = torch.channels_last
        batches = itertools.repeat(Batch(A.contiguous(memory_format=cl), B.contiguous(memory_format=cl)))
    else:
        batches = _stream(_loader(jpeg_folders, tmp_path, name, workers)[0])

    def steps():
        for _ in range(STEPS):
            b = next(batches)
            model.train_step(b.A, b.B)
        synchronize()

    steps()  # cuDNN autotuning, allocator and loader warm-up
    benchmark.pedantic(steps, rounds=rounds(5), iterations=1)
    seconds = _median(benchmark)
    info = {"loader": name, "workers": workers, "batch": BATCH, "crop_size": CROP, "env": environment()}
    if seconds:
        info["pairs_per_s"] = BATCH * STEPS / seconds
        if name == "synthetic":
            _synthetic_pairs_per_s[:] = [info["pairs_per_s"]]
        elif _synthetic_pairs_per_s:
            info["fraction_of_synthetic"] = info["pairs_per_s"] / _synthetic_pairs_per_s[0]
    benchmark.extra_info.update(info)
