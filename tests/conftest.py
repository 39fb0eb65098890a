import os

import numpy as np
import pytest
import torch
from PIL import Image

# Two cores: intra-op threads beyond that only add contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Without a GPU, Triton kernels run under Triton's CPU interpreter. The variable is read when a kernel
# is defined, so it is set here, before any test imports fastcycle.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def write_images(folder, n: int, size=(40, 36), seed: int = 0, ext: str = "png") -> list:
    """n random RGB images of (width, height) `size` in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img_{i:03d}.{ext}"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def dataset(tmp_path):
    """A tiny unpaired dataset in the reference layout: 6 A and 5 B images, 2 test images each."""
    root = tmp_path / "data"
    write_images(root / "trainA", 6, seed=1)
    write_images(root / "trainB", 5, seed=2, ext="jpg")
    write_images(root / "testA", 2, seed=3)
    write_images(root / "testB", 2, seed=4)
    return root
