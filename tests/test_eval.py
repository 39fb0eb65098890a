"""`fastcycle eval` end to end: a tiny trained CycleGAN, crops of scikit-image's photographs as testA
(with grayscale ones) and testB, the real Inception weights. Its numbers are checked against the same
translations and features computed here without the command, per direction; the cache, the folders
mode, an on-the-fly ONNX export and every bad input's one line.

Each image costs one Inception pass (~0.13 s on 2 cores): the command's runs and the reference features
are computed once per module and the folders are small."""

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import skimage
from PIL import Image

from fastcycle.cli import build_parser
from fastcycle.data.folders import read_image, write_image
from fastcycle.export.eval_generators import _config_direction
from fastcycle.export.translator import load_translator
from fastcycle.quality.distances import KID_SUBSET_SIZE, KID_SUBSETS, compare
from fastcycle.quality.features import inception_features
from fastcycle.quality.realsets import images_in, read_images
from fastcycle.quality.weights import load_inception
from fastcycle.train import train
from fastcycle.trained import load_generator, save_generator
from tests.test_cli import run_cli
from tests.test_train import tiny

N = 10  # images per test folder: KID and FID need 2; each is one Inception pass
BATCH = "16"  # the command's --batch-size, and the reference features' batch: the same float sums


def _crops(names: list[str], n: int, hw: tuple[int, int], seed: int) -> list[np.ndarray]:
    """n (H, W[, 1]) crops of scikit-image's photographs, cycling through `names` (camera.png: gray)."""
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        photo = np.asarray(Image.open(Path(skimage.data_dir) / names[i % len(names)]))
        y, x = (int(rng.integers(0, photo.shape[k] - hw[k])) for k in (0, 1))
        crop = photo[y : y + hw[0], x : x + hw[1]]
        out.append(crop[..., None] if crop.ndim == 2 else crop[..., :3])
    return out


def _write(folder: Path, images: list[np.ndarray], bits: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        write_image(a.astype(np.uint16) * 257 if bits == 16 else a, folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """root/data: testA (people, a cat, coffee and the gray camera man, 40x48), testB (a rocket, a
    motorcycle, a micrograph, 44x36), trainA/trainB (their first 4); root/run: one training step."""
    root = tmp_path_factory.mktemp("eval")
    a = _crops(["astronaut.png", "coffee.png", "chelsea.png", "camera.png"], N, (40, 48), seed=1)
    b = _crops(["rocket.jpg", "motorcycle_left.png", "ihc.png"], N, (44, 36), seed=2)
    data = root / "data"
    for name, images in (("testA", a), ("testB", b), ("trainA", a[:4]), ("trainB", b[:4])):
        _write(data / name, images)
    train(tiny(data=str(data), out=str(root / "run"), max_steps=1))
    return SimpleNamespace(root=root, data=data, run=root / "run", cache=root / "cache")


@pytest.fixture(autouse=True)
def _cache(world, monkeypatch):
    monkeypatch.setenv("FASTCYCLE_CACHE", str(world.cache))


def _eval(*flags):
    return run_cli("eval", "--device", "cpu", "--batch-size", BATCH, *flags)


@pytest.fixture(scope="module")
def first(world):
    """`fastcycle eval --checkpoint RUN --data DATA` with an empty feature cache: (its run, its JSON)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTCYCLE_CACHE", str(world.cache))
        assert not world.cache.exists()
        proc = _eval("--checkpoint", world.run, "--data", world.data)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads((world.run / "eval.json").read_text())


@pytest.fixture(scope="module")
def reference(world):
    """Features computed here, without the command: each generator's translations of its own test
    folder (G_AB(testA), G_BA(testB)) and each real test folder's."""
    net = load_inception(device="cpu")
    features = {}
    for direction, source in (("AtoB", "testA"), ("BtoA", "testB")):
        g = load_translator(world.run, direction, "torch", device="cpu", say=lambda _: None, output_bits=8)
        images = list(read_images(images_in(world.data / source)))
        features[direction] = inception_features(g.translate_arrays(images), net, int(BATCH))
        features[source] = inception_features(images, net, int(BATCH))
    return features


def test_prints_one_line_per_direction_and_writes_the_json(world, first):
    proc, report = first
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(
        f"AtoB: G_AB(testA) vs testB: FID {report['results']['AtoB']['fid']:.3f} | KID"
    )
    assert lines[1].startswith("BtoA: G_BA(testB) vs testA: FID ")
    assert lines[2].startswith(f"wrote {world.run / 'eval.json'} (") and len(lines) == 3
    for direction, source, target in (("AtoB", "testA", "testB"), ("BtoA", "testB", "testA")):
        r = report["results"][direction]
        assert r["fake_from"] == str(world.data / source) and r["real"] == str(world.data / target)
        assert (r["n_fake"], r["n_real"], r["kid_subset_size"], r["kid_subsets"]) == (N, N, N, KID_SUBSETS)
        assert r["real_features_cached"] is False and r["kid_std"] >= 0 and r["seconds"] > 0
        g = r["generator"]
        assert g["path"] == str(world.run / "checkpoint.pt") and len(g["sha256"]) == 64
        assert (g["backend"], g["precision"]) == ("torch", "fp32")
    assert (
        report["inception"]["sha256"] and report["device"] == "cpu" and report["features_precision"] == "fp32"
    )
    assert report["checkpoint"] == str(world.run) and report["seconds"] > 0


def test_each_direction_is_its_generator_against_the_other_domain(first, reference):
    """The numbers are compare() on the translations made here: not swapped between directions, and the
    fakes measured against the target domain, not their own."""
    results = first[1]["results"]
    for direction, source, target in (("AtoB", "testA", "testB"), ("BtoA", "testB", "testA")):
        expected = compare(reference[direction], reference[target])
        # Equal to the last bit: the same images through the same networks in the same batches.
        assert results[direction]["fid"] == expected.fid and results[direction]["kid"] == expected.kid
        assert abs(results[direction]["fid"] - compare(reference[direction], reference[source]).fid) > 1
    swapped = compare(reference["BtoA"], reference["testB"]).fid
    assert abs(results["AtoB"]["fid"] - swapped) > 1


def test_a_second_run_takes_the_real_features_from_the_cache(world, first, tmp_path):
    out = tmp_path / "again.json"
    proc = _eval("--checkpoint", world.run, "--data", world.data, "--direction", "AtoB", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == first[0].stdout.splitlines()[0]
    assert "real features: testB from the cache" in proc.stdout
    again = json.loads(out.read_text())["results"]
    assert list(again) == ["AtoB"] and again["AtoB"]["real_features_cached"] is True
    before = first[1]["results"]["AtoB"]
    assert {k: again["AtoB"][k] for k in ("fid", "kid", "kid_std")} == {
        k: before[k] for k in ("fid", "kid", "kid_std")
    }


def test_two_folders_same_images_at_16_bits_give_zero_and_other_images_more(world, first, tmp_path):
    """--real/--fake, no generator: testA against its own pixels stored as 16-bit PNGs (gray and RGB)."""
    deep = _write(tmp_path / "deep", [read_image(p)[0] for p in images_in(world.data / "testA")], bits=16)
    assert read_image(deep / "00.png")[0].dtype == np.uint16
    out = tmp_path / "folders.json"
    proc = _eval("--real", world.data / "testA", "--fake", deep, "--json", out)
    assert proc.returncode == 0, proc.stderr
    same = json.loads(out.read_text())["results"]["folders"]
    # The same features on both sides: FID's float64 sums of 2048-wide products round to ~1e-13.
    assert abs(same["fid"]) < 1e-6 and same["real_features_cached"] is True
    assert proc.stdout.startswith(f"{deep} vs {world.data / 'testA'}: FID ")
    entries = sorted(world.cache.rglob("*.npy"))
    flags = ("--eval-images", "3", "--no-cache", "--kid-subsets", "7", "--json", out)
    proc = _eval("--real", world.data / "testA", "--fake", world.data / "testB", *flags)
    assert proc.returncode == 0, proc.stderr
    other = json.loads(out.read_text())["results"]["folders"]
    # (KID, an unbiased estimate, may fall below 0 on 3 images: only FID is checked here.)
    assert other["fid"] > 100 and (other["n_fake"], other["kid_subsets"]) == (3, 7)
    assert other["real_features_cached"] is False and sorted(world.cache.rglob("*.npy")) == entries


def test_onnxruntime_measures_the_export_made_on_the_fly(world, first, tmp_path):
    out = tmp_path / "ort.json"
    flags = (
        "--checkpoint",
        world.run,
        "--data",
        world.data,
        "--direction",
        "AtoB",
        "--backend",
        "onnxruntime",
    )
    proc = _eval(*flags, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert list(world.run.glob("export-AtoB-*.onnx")), "the export is kept beside the checkpoint"
    ort = json.loads(out.read_text())["results"]["AtoB"]
    assert ort["generator"]["backend"] == "onnxruntime" and "onnxruntime" in ort["generator"]["runner"]
    torch_fid = first[1]["results"]["AtoB"]["fid"]
    # The two backends' outputs differ by ~4e-6 (the export's parity check), which moves a pixel one
    # 8-bit level only at a rounding boundary: measured 6e-5 of the FID; another generator or set moves
    # it by over 5% (the two directions here differ by 9%).
    assert ort["fid"] == pytest.approx(torch_fid, rel=1e-3)
    onnx_file = next(world.run.glob("export-AtoB-*.onnx"))  # the file itself, as --checkpoint
    proc = _eval("--checkpoint", onnx_file, "--data", world.data, "--eval-images", "3", "--json", out)
    assert proc.returncode == 0, proc.stderr
    by_file = json.loads(out.read_text())["results"]
    assert list(by_file) == ["AtoB"] and by_file["AtoB"]["label"] == "AtoB: G(testA) vs testB"
    assert by_file["AtoB"]["generator"]["path"] == str(onnx_file) and by_file["AtoB"]["n_fake"] == 3


def test_a_one_generator_file_is_measured_the_way_it_records(world, first, tmp_path):
    """A G_BA exported to safetensors holds one generator that maps B to A: testB translated, against
    testA; --eval-images takes the first N of each set."""
    g_ba = save_generator(
        load_generator(world.run, "BtoA"), tmp_path / "g_ba.safetensors", _arch(world), "BtoA"
    )
    proc = _eval("--checkpoint", g_ba, "--data", world.data, "--eval-images", "3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "g_ba.eval.json").read_text())["results"]
    assert list(report) == ["BtoA"] and report["BtoA"]["label"] == "BtoA: G(testB) vs testA"
    assert (report["BtoA"]["n_fake"], report["BtoA"]["n_real"]) == (3, 3)


def _arch(world) -> dict:
    config = json.loads((world.run / "config.json").read_text())
    return {**config["model"], "input_nc": 3, "output_nc": 3}


def test_a_one_way_runs_direction_comes_from_its_config():
    assert _config_direction({"model": {"model": "pix2pix"}, "data": {"direction": "BtoA"}}) == "BtoA"
    assert _config_direction({"model": {"model": "cycle_gan"}, "data": {"direction": "BtoA"}}) is None


def test_the_kid_flags_say_the_distances_defaults():
    """The parser imports no numpy, so it states KID's defaults in its help; they must be the core's."""
    actions = {a.dest: a for a in build_parser().commands["eval"].actions}
    assert actions["kid_subsets"].help.endswith(f"(default: {KID_SUBSETS})")
    assert f"(default: {KID_SUBSET_SIZE}," in actions["kid_subset_size"].help


def _bad_inputs(world, tmp: Path) -> list[tuple[list, str]]:
    """(flags, the error line's expected words): each problem with otherwise good input."""
    only_a = tmp / "only_a"
    shutil.copytree(world.data / "testA", only_a / "testA")
    one_b = tmp / "one_b"
    shutil.copytree(world.data / "testA", one_b / "testA")
    _write(one_b / "testB", _crops(["rocket.jpg"], 1, (44, 36), seed=3))
    broken = tmp / "broken"
    shutil.copytree(world.data, broken)
    (broken / "testA" / "00.png").write_bytes(b"not a png")
    junk = tmp / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    run, data = ["--checkpoint", world.run], ["--data", world.data]
    return [
        (["--checkpoint", tmp / "nope", *data], f"checkpoint {tmp / 'nope'} does not exist"),
        ([*run, "--data", tmp / "nodata"], f"--data {tmp / 'nodata'}: no such folder"),
        ([*run, "--data", only_a], f"{only_a / 'testB'}: no such folder"),
        ([*run, "--data", one_b], f"{one_b / 'testB'}: 1 image(s); FID and KID need at least 2"),
        ([*run, "--data", broken], f"cannot read {broken / 'testA' / '00.png'}"),
        (
            [*run, *data, "--inception-weights", tmp / "none.pt"],
            f"Inception weights {tmp / 'none.pt'}: no such",
        ),
        (
            [*run, *data, "--inception-weights", junk],
            f"{junk} is not a known copy of the 2015-12-05 Inception",
        ),
        ([*run, *data, "--real", world.data / "testA"], "pass one of the two"),
        ([*run], "--checkpoint needs --data"),
        (["--real", world.data / "testA"], "pass --checkpoint RUN --data DIR, or --real DIR --fake DIR"),
        ([*run, *data, "--eval-images", "-1"], "--eval-images must be at least 0"),
    ]


def test_bad_input_is_one_line_and_leaves_an_earlier_json_as_it_was(world, tmp_path):
    out = tmp_path / "eval.json"
    out.write_text('{"earlier": true}\n')
    for flags, expected in _bad_inputs(world, tmp_path):
        proc = _eval(*flags, "--json", out)
        assert proc.returncode == 2 and proc.stdout == "", (flags, proc.stdout)
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr, (flags, proc.stderr)
        assert out.read_text() == '{"earlier": true}\n', flags


def test_a_json_path_that_cannot_be_written_is_one_line(world, tmp_path):
    flags = ("--eval-images", "2", "--json", tmp_path)  # a folder: no file can take its name
    proc = _eval("--real", world.data / "testA", "--fake", world.data / "testB", *flags)
    fix = "pass --json PATH somewhere writable"
    assert proc.returncode == 2
    assert proc.stderr == f"fastcycle: error: cannot write {tmp_path} (Is a directory); {fix}\n"
    assert proc.stdout.startswith(f"{world.data / 'testB'} vs "), "the measurement was still printed"
