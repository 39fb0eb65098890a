"""fastcycle.plot (loss curves PNG), fastcycle.gallery (HTML results page), train.tensorboard (sink)."""

from __future__ import annotations

import html
import json
import math
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image, ImageColor

from fastcycle.errors import UserError
from fastcycle.gallery import GalleryWriter, write_gallery
from fastcycle.plot import LR_COLOR, PALETTE, plot_run, read_metrics

CYCLE_KEYS = ("D_A", "G_BA", "cycle_A", "idt_A", "D_B", "G_AB", "cycle_B", "idt_B")


def _write_metrics(run: Path, n: int = 60, tail: str = "") -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(1, n + 1):
        row = {"step": 50 * i, "epoch": i // 10, "lr": 2e-4, "pairs_per_s": 3.2, "mfu": 0.3}
        for j, key in enumerate(CYCLE_KEYS):
            row[key] = 0.2 + j * 0.3 + 0.1 * math.sin(i / 4 + j)
        if i == 20:
            row["G_AB"] = float("nan")  # json.dumps writes NaN, which json.loads reads back
        if i == 21:
            row["cycle_A"] = float("inf")
        lines.append(json.dumps(row))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + tail)


def _colour_count(img: Image.Image, colour: str) -> int:
    arr = np.asarray(img.convert("RGB"))
    return int(np.all(arr == np.array(ImageColor.getrgb(colour), dtype=np.uint8), axis=-1).sum())


# ---- plot ----------------------------------------------------------------------------------------


def test_plot_run_draws_every_loss(tmp_path):
    run = tmp_path / "horse2zebra"
    _write_metrics(run, tail='{"step": 3050, "D_A": 0.2')  # a line cut short by a killed run
    assert len(read_metrics(run / "metrics.jsonl")) == 60

    out = plot_run(run)
    assert out == run / "loss_curves.png"
    assert not list(run.glob(".*tmp"))
    with Image.open(out) as img:
        assert img.format == "PNG"
        img.load()
    w, h = img.size
    assert 600 <= w <= 2000 and 400 <= h <= 3000
    assert len(img.getcolors(maxcolors=100_000) or range(100_001)) > 10  # not a blank canvas

    # each loss's colour fills far more pixels than its legend swatch: the curve is drawn
    for colour in [*PALETTE[: len(CYCLE_KEYS)], LR_COLOR]:
        assert _colour_count(img, colour) > 300, colour


def test_plot_run_other_families_and_out_path(tmp_path):
    run = tmp_path / "p2p"
    run.mkdir()
    rows = [
        {"step": s, "lr": 2e-4, "G_GAN": 1.0, "G_L1": 20.0 - s / 100, "D_real": 0.5, "D_fake": 0.4}
        for s in (1, 2)
    ]
    rows.append({"step": 3, "gp": 0.1, "D": True, "note": "text"})  # bool / string values are not losses
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = plot_run(run, tmp_path / "charts" / "p2p.png")
    assert out.is_file() and not (run / "loss_curves.png").exists()
    with Image.open(out) as img:
        assert img.size[0] >= 600


def test_plot_run_single_point(tmp_path):
    run = tmp_path / "short"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 50, "lr": 2e-4, "G": 1.0, "D": 0.5}) + "\n")
    with Image.open(plot_run(run)) as img:
        assert _colour_count(img, PALETTE[0]) > 10  # D: a dot, plus its legend swatch


def test_plot_run_errors(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        plot_run(tmp_path / "missing")
    with pytest.raises(UserError, match="train first, or point at a run folder"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "lr": 2e-4, "pairs_per_s": 2.0})
        + "\n"
        + json.dumps({"step": 2, "G": None})
        + "\n"
        '{"step": 3, "G": NaN}\n{"step": 4, "G'
    )
    with pytest.raises(UserError, match="no finite loss values"):
        plot_run(tmp_path)
    assert not (tmp_path / "loss_curves.png").exists()


# ---- gallery -------------------------------------------------------------------------------------


def _image(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(path)
    return path


def _links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return [unquote(m.replace("&amp;", "&")) for m in re.findall(r'(?:src|href)="([^"]*)"', text)]


def test_write_gallery(tmp_path):
    out = tmp_path / "results"
    src = tmp_path / "src"
    names = ["plain", "a <b> & 'c'", "space name"]
    rows = []
    for i, name in enumerate(names):
        big = _image(src / "in" / f"{name}.png", 300, seed=i)
        small = _image(out / "fake" / f"{name}.png", 64, seed=10 + i)
        rows.append((name, [big, small, None if i == 2 else big]))
    page = write_gallery(out, rows, ["input", "output", "rec"], title="x2y <test>", thumb=128)

    assert page == out / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "<title>x2y &lt;test&gt;</title>" in text
    assert "a &lt;b&gt; &amp; &#x27;c&#x27;" in text and "<b>" not in text
    for name in names:
        assert f"<th>{html.escape(name)}</th>" in text
    assert text.count("<tr>") == 1 + len(names)
    assert text.count("<img ") == 3 * len(names) - 1

    links = _links(page)
    assert links and all(not Path(link).is_absolute() for link in links)
    for link in links:
        assert (out / link).is_file(), link

    thumbs = sorted((out / "thumbs").rglob("*.jpg"))
    assert {t.parent.name for t in thumbs} == {"input", "rec"}  # output images are small: linked as they are
    for t in thumbs:
        with Image.open(t) as im:
            assert max(im.size) == 128
    assert "fake/plain.png" in links  # a small image is its own thumbnail
    assert not list(out.rglob(".*tmp"))

    with pytest.raises(ValueError, match="columns"):
        write_gallery(out, [("x", [small])], ["input", "output"], "t")


def test_gallery_writer_threads(tmp_path):
    out = tmp_path / "results"
    n = 40

    def work(i: int) -> None:
        name = f"img{i:03d}"
        a = _image(out / "input" / f"{name}.png", 200 if i % 2 else 32, seed=i)
        b = _image(out / "output" / f"{name}.png", 32, seed=100 + i)
        gallery.add(name, {"input": a})
        gallery.add(name, {"output": b})  # the same row, filled in later

    with GalleryWriter(out, "threads", thumb=64) as gallery, ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(n)))
        assert len(gallery) == n
    page = out / "index.html"
    text = page.read_text()
    assert text.count("<img ") == 2 * n
    assert text.index("img000") < text.index("img001") < text.index("img039")  # sorted by name
    assert text.index("<th>input</th>") < text.index("<th>output</th>")
    for link in _links(page):
        assert (out / link).is_file(), link
    assert len(list((out / "thumbs" / "input").glob("*.jpg"))) == n // 2

    fixed = GalleryWriter(tmp_path / "fixed", "t", columns=["input"])
    with pytest.raises(ValueError, match="unknown column"):
        fixed.add("x", {"output": out / "output" / "img000.png"})
    assert fixed.close().is_file()  # an empty page is still a page


# ---- tensorboard ---------------------------------------------------------------------------------


def test_tensorboard_sink_roundtrip(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fastcycle.train.tensorboard import TensorBoardSink

    sink = TensorBoardSink(tmp_path)
    sink.log_scalars(50, {"step": 50, "epoch": 0, "lr": 2e-4, "D_A": 0.25, "G_AB": 0.5, "bad": float("nan")})
    sink.log_scalars(100, {"step": 100, "epoch": 0, "lr": 1e-4, "D_A": 0.125, "G_AB": 0.75, "custom/x": 3})
    sink.log_image("samples", 100, np.full((16, 24, 3), 200, dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        sink.log_image("bad", 100, np.zeros((16, 24, 3), dtype=np.float32))
    sink.close()
    sink.close()

    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    assert set(tags["scalars"]) == {"train/epoch", "train/lr", "loss/D_A", "loss/G_AB", "custom/x"}
    assert [(e.step, e.value) for e in acc.Scalars("loss/D_A")] == [(50, 0.25), (100, 0.125)]
    assert [(e.step, e.value) for e in acc.Scalars("loss/G_AB")] == [(50, 0.5), (100, 0.75)]
    assert [e.step for e in acc.Scalars("train/lr")] == [50, 100]
    assert acc.Scalars("train/lr")[1].value == pytest.approx(1e-4)
    assert tags["images"] == ["samples"]
    image = acc.Images("samples")[0]
    assert (image.step, image.width, image.height) == (100, 24, 16)


def test_tensorboard_missing_package(tmp_path, monkeypatch):
    from fastcycle.train.tensorboard import TensorBoardSink

    # None in sys.modules makes `import` fail as if the package were not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError) as info:
        TensorBoardSink(tmp_path)
    assert str(info.value) == (
        "--tensorboard needs the tensorboard package: pip install tensorboard (or fastcycle[tensorboard])"
    )
    assert not (tmp_path / "tensorboard").exists()


def test_smoothing_is_a_debiased_ema_that_steps_over_gaps():
    from fastcycle.plot import smooth, smoothing_weight

    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # debiased: not pulled to 0
    out = smooth([0.0, math.nan, 10.0], 0.5)
    assert out[0] == 0.0 and math.isnan(out[1]) and out[2] == pytest.approx(10 * 0.5 / 0.75)
    assert smooth([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert smoothing_weight(10) == 0.0 and 0.9 < smoothing_weight(1000) <= 0.98
