"""A dataset folder full of hostile files: every loader converts or skips, reports once, never crashes."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fastcycle.data.scan import inspect, scan_domain
from fastcycle.errors import UserError
from fastcycle.train import train
from tests.conftest import write_images
from tests.test_loaders import LOADERS, batches, make_loader
from tests.test_train import tiny


def _png(width: int, height: int, depth: int, colour: int, raw: bytes) -> bytes:
    """A PNG written by hand: PIL cannot write 48-bit RGB, nor a header that lies about its size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def hostile_folder(folder):
    """Every kind of bad file a real folder holds; returns (names that must be skipped, conversion kinds)."""
    write_images(folder, 4, size=(48, 40), ext="jpg")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(500))
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.png").write_text("this is not a PNG")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(rng.bytes(64))
    # A 30,000 x 30,000 header (900 megapixels) over a few bytes: a decompression bomb.
    (folder / "huge.png").write_bytes(_png(30_000, 30_000, 8, 2, b"\x00" * 64))
    Image.fromarray(rgb[..., 0]).save(folder / "gray.jpg")
    Image.fromarray(rgb[..., 1]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep16.png")
    rows = [b"\x00" + (rgb[y].astype(">u2") * 257).tobytes() for y in range(40)]
    (folder / "rgb16.png").write_bytes(_png(48, 40, 16, 2, b"".join(rows)))
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:6, :8]).save(folder / "tiny.png")  # smaller than any crop
    skipped = {"truncated.jpg", "corrupt.jpg", "empty.png", "fake.png", "notes.txt", ".DS_Store", "huge.png"}
    return skipped, {"RGBA", "palette", "16-bit", "CMYK"}


def test_scan_sorts_every_hostile_file(tmp_path):
    skipped, kinds = hostile_folder(tmp_path / "trainA")
    scan = scan_domain(tmp_path, "trainA")
    assert {p.name for p, _ in scan.skipped} == skipped
    why = {p.name: reason for p, reason in scan.skipped}
    assert "truncated" in why["truncated.jpg"] and why["notes.txt"] == "not an image file (by extension)"
    assert why["huge.png"].startswith("too large: Image size (900000000 pixels) exceeds limit")
    assert why["empty.png"] == "empty file (0 bytes)"
    assert {f.convert for f in scan.converted} == kinds
    assert {f.path.name: f.convert for f in scan.converted}["rgb16.png"] == "16-bit"
    assert len(scan.images) == 4 + 2 + 5 + 1  # good, grayscale, converted, tiny
    assert inspect(tmp_path / "trainA" / "gray.jpg").convert == ""  # GPU decoders read grayscale JPEG
    assert scan.summary() == "trainA: 12 images, 7 skipped (listed in the run log)"
    # What decoding to RGB does, per kind: the run log's count lines.
    assert scan.conversion_counts(3) == {
        "16 to 8 bits": 2,  # deep16.png (gray) and rgb16.png
        "grayscale to RGB": 3,  # gray.jpg, gray.png, deep16.png
        "RGBA to RGB (alpha dropped)": 1,
        "palette to RGB": 1,
        "CMYK to RGB": 1,
    }
    assert scan.conversion_counts(1)["RGB to grayscale"] == 12 - 3


def test_a_folder_of_only_bad_files_fails_fast(tmp_path):
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "a.jpg").write_bytes(b"")
    (tmp_path / "trainA" / "b.png").write_text("nope")
    with pytest.raises(
        UserError, match=r"trainA: none of its 2 files is a readable image \(e.g. a.jpg: empty"
    ):
        scan_domain(tmp_path, "trainA")


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("policy", ["resize_and_crop", "crop"])
def test_every_loader_trains_through_a_hostile_folder(tmp_path, loader, policy):
    hostile_folder(tmp_path / "trainA")
    write_images(tmp_path / "trainB", 5, size=(48, 40), seed=3)
    data = make_loader(tmp_path, loader, tmp_path / "work", policy=policy, batch_size=3)
    assert data.spec.steps_per_epoch == 4  # 12 usable A images, batch 3
    for epoch in range(2):  # the smaller domain wraps; every usable file comes up
        out = batches(data, epoch)
        assert len(out) == 4
        for A, B in out:
            assert A.shape == B.shape == (3, 3, 32, 32) and torch.isfinite(A).all()
            assert A.min() >= -1 and A.max() <= 1


def test_training_reports_bad_files_once_and_names_them_in_the_run_log(tmp_path, capsys):
    skipped, _ = hostile_folder(tmp_path / "data" / "trainA")
    write_images(tmp_path / "data" / "trainB", 5, size=(48, 40), seed=3)
    cfg = tiny(data=str(tmp_path / "data"), out=str(tmp_path / "run"), max_steps=3, loader="torch")
    train(cfg)
    err = capsys.readouterr().err
    assert "data: trainA: 12 images, 7 skipped" in err
    assert "data: trainA: 2 images converted 16 to 8 bits\n" in err
    assert "data: trainA: 1 image converted RGBA to RGB (alpha dropped)\n" in err
    assert err.count("7 skipped") == 1 and "truncated.jpg" not in err  # counted once, names in the log
    log = (tmp_path / "run" / "train.log").read_text()
    for name in skipped:
        assert f"data: skipped {tmp_path / 'data' / 'trainA' / name}: " in log
    assert f"data: converted {tmp_path / 'data' / 'trainA' / 'cmyk.jpg'}: CMYK to RGB\n" in log
    assert "data: trainA: 3 images converted grayscale to RGB\n" in log
