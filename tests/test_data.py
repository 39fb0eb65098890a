"""Folders, preprocessing policies and the unaligned dataset."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastcycle.config import DataConfig
from fastcycle.data.folders import domain_images, load_rgb
from fastcycle.data.loader import build_train_data, to_device
from fastcycle.data.transforms import preprocess, to_model_range, to_uint8
from fastcycle.errors import UserError
from tests.conftest import write_images


def test_missing_and_empty_domains_are_clear(tmp_path):
    with pytest.raises(UserError, match="does not exist; pass --data"):
        domain_images(tmp_path / "nope", "trainA")
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="trainA holds no images"):
        domain_images(tmp_path, "trainA")
    with pytest.raises(UserError, match="trainB is missing"):
        domain_images(tmp_path, "trainB")


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
    out = preprocess(img, policy, load_size=32, crop_size=24, flip=True, rng=np.random.default_rng(0))
    assert out.shape == expected and out.dtype == torch.uint8


def test_flip_happens_about_half_the_time_and_is_exact():
    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    rng = np.random.default_rng(1)
    outs = [preprocess(img, "none", 8, 8, flip=True, rng=rng) for _ in range(400)]
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
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == (7, 9), name
    assert np.asarray(load_rgb(tmp_path / "deep.png")).min() == 255  # 16-bit white stays white
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(OSError):
        load_rgb(tmp_path / "broken.png")


def _loader(root, **kw):
    cfg = DataConfig(data=str(root), load_size=36, crop_size=32, num_workers=0, **kw)
    return build_train_data(cfg, batch_size=2, seed=7, device=torch.device("cpu"))


def test_unaligned_batches_are_reproducible_and_resumable(dataset):
    data = _loader(dataset)
    assert len(data.dataset) == 6 and data.steps_per_epoch == 3
    epoch0 = [b["A"] for b in data.epoch(0)]
    again = [b["A"] for b in _loader(dataset).epoch(0)]
    assert all(torch.equal(a, b) for a, b in zip(epoch0, again, strict=True))
    assert epoch0[0].shape == (2, 3, 32, 32) and epoch0[0].dtype == torch.uint8
    resumed = [b["A"] for b in data.epoch(0, start_step=1)]
    assert all(torch.equal(a, b) for a, b in zip(epoch0[1:], resumed, strict=True))
    epoch1 = [b["A"] for b in data.epoch(1)]
    assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True))


def test_serial_batches_pair_in_order(tmp_path):
    write_images(tmp_path / "trainA", 4, seed=1)
    write_images(tmp_path / "trainB", 4, seed=1)  # the same images: serial pairs are identical
    data = _loader(tmp_path, serial_batches=True, preprocess="none", no_flip=True)
    for batch in data.epoch(0):
        assert torch.equal(batch["A"], batch["B"])


def test_unreadable_files_are_skipped_and_reported(dataset):
    (dataset / "trainA" / "img_002.png").write_bytes(b"")  # zero bytes
    (dataset / "trainA" / "img_004.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = _loader(dataset)
    skipped = [p for b in data.epoch(0) for p in b["skipped"]]
    assert sorted({p.rsplit("/", 1)[-1] for p in skipped}) == ["img_002.png", "img_004.png"]


def test_to_device_channels_last():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    y = to_device(x, torch.device("cpu"), channels_last=True)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.float32
    assert torch.equal(to_uint8(y), x)
