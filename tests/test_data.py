"""Folders, preprocessing policies and the unaligned dataset."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastcycle.data.contract import to_device
from fastcycle.data.folders import load_image
from fastcycle.data.scan import scan_domain
from fastcycle.data.transforms import preprocess, to_model_range, to_uint8
from fastcycle.errors import UserError


def test_missing_and_empty_domains_are_clear(tmp_path):
    with pytest.raises(UserError, match="does not exist; pass --data"):
        scan_domain(tmp_path / "nope", "trainA")
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="trainA holds no images"):
        scan_domain(tmp_path, "trainA")
    with pytest.raises(UserError, match="trainB is missing"):
        scan_domain(tmp_path, "trainB")


@pytest.mark.parametrize(
    ("policy", "size", "expected"),
    [
        ("resize_and_crop", (50, 30), (3, 24, 24)),
        ("crop", (50, 30), (3, 24, 24)),
        ("crop", (20, 10), (3, 24, 24)),  # smaller than the crop: scaled up first
        ("scale_width", (60, 30), (3, 24, 32)),  # width 32; height max(32 * 30/60, crop 24), as the reference
        ("scale_width_and_crop", (60, 30), (3, 24, 24)),
        ("none", (50, 30), (3, 32, 48)),  # round(w / 4) * 4 with Python rounding, as the reference
    ],
)
def test_preprocess_policies(policy, size, expected):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = preprocess(img, policy, load_size=32, crop_size=24, flip=True, u=np.random.default_rng(0).random(3))
    assert out.shape == expected and out.dtype == torch.uint8


def test_flip_happens_about_half_the_time_and_is_exact():
    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    rng = np.random.default_rng(1)
    outs = [preprocess(img, "none", 8, 8, flip=True, u=rng.random(3)) for _ in range(400)]
    flipped = [torch.equal(o, torch.from_numpy(arr[:, ::-1].copy()).permute(2, 0, 1)) for o in outs]
    plain = [torch.equal(o, torch.from_numpy(arr).permute(2, 0, 1)) for o in outs]
    assert all(f != p for f, p in zip(flipped, plain, strict=True))
    assert 155 <= sum(flipped) <= 245  # Binomial(400, 1/2) within 4.5 sigma


def test_value_range_conversions_round_trip():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = to_model_range(x)
    assert y.min() == -1 and y.max() == 1
    assert torch.equal(to_uint8(y), x)


def test_odd_image_modes_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8), "L").convert("P").save(tmp_path / "pal.png")
    Image.fromarray(np.full((9, 7), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).convert("CMYK").save(
        tmp_path / "cmyk.jpg"
    )
    for name in ("gray.png", "rgba.png", "pal.png", "deep.png", "cmyk.jpg"):
        img = load_image(tmp_path / name, 3)
        assert img.mode == "RGB" and img.size == (7, 9), name
    assert np.asarray(load_image(tmp_path / "deep.png", 3)).min() == 255  # 16-bit white stays white
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(OSError):
        load_image(tmp_path / "broken.png", 3)


def test_to_device_channels_last():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    y = to_device(x, torch.device("cpu"), channels_last=True)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.float32
    assert torch.equal(to_uint8(y), x)
