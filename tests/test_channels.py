"""Grayscale and mixed-channel models (--input-nc/--output-nc) end to end, and 8/16-bit image I/O.

Every file here is real: images written by PIL, imagecodecs and tifffile, runs trained by the loop, an
ONNX model run by ONNX Runtime's CPU provider."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tifffile
import torch
from PIL import Image
from safetensors import safe_open

from fastcycle.checkpoint import load_checkpoint
from fastcycle.cli import main
from fastcycle.config import TrainConfig, apply_overrides, validate
from fastcycle.data.folders import convert_channels, read_image, write_image
from fastcycle.errors import UserError
from fastcycle.export.onnx import read_metadata
from fastcycle.models import build_generator
from fastcycle.presets import dcgan, pix2pix
from fastcycle.train import train
from fastcycle.trained import read_generator_file
from tests.test_loaders import batches, make_loader
from tests.test_train import tiny
from tests.toy_data import write_discs, write_pix2pix

# --- image I/O ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_then_read_is_bit_exact(tmp_path, suffix, channels, dtype):
    rng = np.random.default_rng(channels)
    arr = rng.integers(0, np.iinfo(dtype).max + 1, (9, 7, channels)).astype(dtype)
    write_image(arr, tmp_path / f"x{suffix}")
    back, notes = read_image(tmp_path / f"x{suffix}")
    assert back.dtype == dtype and back.shape == arr.shape and notes == []
    assert np.array_equal(back, arr)
    assert [p.name for p in tmp_path.iterdir()] == [f"x{suffix}"]  # no temporary file left behind


def test_16_bit_rgb_png_keeps_its_low_byte(tmp_path):
    """Pillow reads a 48-bit PNG as 8 bits; read_image must not."""
    arr = np.arange(3 * 4 * 3, dtype=np.uint16).reshape(3, 4, 3) * 1001 + 1  # low bytes differ
    write_image(arr, tmp_path / "deep.png")
    assert np.asarray(Image.open(tmp_path / "deep.png")).dtype == np.uint8  # what Pillow would give
    assert np.array_equal(read_image(tmp_path / "deep.png")[0], arr)


def test_reading_names_each_conversion(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA").save(tmp_path / "la.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    tifffile.imwrite(tmp_path / "float.tif", rng.random((9, 7)).astype(np.float32))
    expected = {
        "rgba.png": (3, "RGBA to RGB (alpha dropped)"),
        "la.png": (1, "LA to L (alpha dropped)"),
        "palette.png": (3, "palette to RGB"),
        "cmyk.jpg": (3, "CMYK to RGB"),
        "float.tif": (1, "32-bit to 16 bits"),
    }
    for name, (channels, note) in expected.items():
        arr, notes = read_image(tmp_path / name)
        assert arr.shape == (9, 7, channels) and notes == [note], name
    assert np.array_equal(read_image(tmp_path / "rgba.png")[0], rgb)  # the colour, untouched
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(OSError):
        read_image(tmp_path / "broken.png")
    with pytest.raises(ValueError, match=r"16-bit images are written to .png, .tif, .tiff, not .jpg"):
        write_image(rgb.astype(np.uint16), tmp_path / "x.jpg")


def test_channel_conversion_matches_pil_and_replicates_gray():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gray, note = convert_channels(rgb, 1)
    assert note == "RGB to grayscale"
    assert np.array_equal(gray[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))  # ITU-R 601-2 as PIL
    back, note = convert_channels(gray, 3)
    assert note == "grayscale to RGB" and np.array_equal(back, np.repeat(gray, 3, axis=2))
    deep = rgb.astype(np.uint16) * 257  # the same image at 16 bits: the same luminance, x 257
    # PIL rounds the luminance to 8 bits, the 16-bit one rounds at 16: at most one 8-bit level apart.
    assert np.abs(convert_channels(deep, 1)[0].astype(int) - gray.astype(int) * 257).max() <= 257
    assert convert_channels(rgb, 3) == (rgb, None)


# --- options ------------------------------------------------------------------------------------------


def test_channel_options_are_validated_in_one_line():
    with pytest.raises(UserError, match=r"--input-nc 2: images are read as 1 \(grayscale\) or 3 \(RGB\)"):
        validate(tiny(input_nc=2))
    with pytest.raises(UserError, match=r"needs --input-nc == --output-nc .*; pass --lambda-identity 0$"):
        validate(tiny(input_nc=1, output_nc=3))
    validate(tiny(input_nc=1, output_nc=3, lambda_identity=0.0))
    validate(apply_overrides(pix2pix(), {"data": "x", "input_nc": 1}))  # pix2pix has no identity loss


def test_a_config_without_the_fields_reads_as_rgb():
    old = TrainConfig().to_dict()
    del old["model"]["input_nc"], old["model"]["output_nc"]  # a checkpoint from before the options
    m = TrainConfig.from_dict(old).model
    assert (m.input_nc, m.output_nc) == (3, 3)


# --- loaders ------------------------------------------------------------------------------------------


def _gray_and_rgb_domains(root, n=4, size=40):
    """trainA: 8-bit gray PNGs and one 16-bit gray PNG; trainB: RGB PNGs (one with alpha)."""
    rng = np.random.default_rng(3)
    for domain in ("trainA", "trainB"):
        (root / domain).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(
            root / "trainA" / f"{i}.png"
        )
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            root / "trainB" / f"{i}.png"
        )
    write_image(rng.integers(0, 65536, (size, size, 1)).astype(np.uint16), root / "trainA" / "deep.png")
    rgba = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "trainB" / "alpha.png")
    return root


@pytest.mark.parametrize("loader", ["torch", "gpu-cache", "dali"])
def test_every_loader_delivers_each_domain_at_its_channels(tmp_path, loader):
    """A gray -> RGB dataset read as 1 -> 3, and as 3 -> 1 (each file converted on decoding). The DALI
    graph runs its CPU operators (device_id=None)."""
    root = _gray_and_rgb_domains(tmp_path / "data")
    for nc_A, nc_B in ((1, 3), (3, 1)):
        data = make_loader(root, loader, tmp_path / f"{nc_A}{nc_B}", nc_A=nc_A, nc_B=nc_B)
        for A, B in batches(data):
            assert A.shape == (2, nc_A, 32, 32) and B.shape == (2, nc_B, 32, 32)
            assert A.min() >= -1 and A.max() <= 1 and B.min() >= -1 and B.max() <= 1
            if nc_A == 3:  # gray files read as RGB: three equal channels
                assert torch.equal(A[:, 0], A[:, 1]) and torch.equal(A[:, 1], A[:, 2])


def test_torch_and_gpu_cache_agree_on_grayscale(tmp_path):
    root = _gray_and_rgb_domains(tmp_path / "data")
    kw = dict(nc_A=1, nc_B=1)
    t = batches(make_loader(root, "torch", tmp_path / "t", **kw))
    g = batches(make_loader(root, "gpu-cache", tmp_path / "g", **kw))
    assert all(torch.equal(a, b) for x, y in zip(t, g, strict=True) for a, b in zip(x, y, strict=True))


# --- training, checkpoints, import, export --------------------------------------------------------------


def test_grayscale_cyclegan_trains_resumes_and_translates_gray(tmp_path, capsys):
    root = _gray_and_rgb_domains(tmp_path / "data")
    out = tmp_path / "run"
    common = dict(data=str(root), out=str(out), input_nc=1, output_nc=1, sample_every=2)
    train(tiny(max_steps=2, **common))
    result = train(tiny(max_steps=3, resume=True, **common))
    assert result.step == 3
    log = (out / "train.log").read_text()
    assert "data: trainA: 1 image converted 16 to 8 bits\n" in log
    assert "data: trainB: 1 image converted RGBA to RGB (alpha dropped)\n" in log
    assert "data: trainB: 5 images converted RGB to grayscale\n" in log
    state = load_checkpoint(out)
    assert state["config"]["model"]["input_nc"] == 1 and state["step"] == 3
    for name in ("G_AB", "G_BA"):
        assert state["model"]["nets"][name]["model.1.weight"].shape[1] == 1  # the first conv: 1 channel in
    G = read_generator_file(out).generator("AtoB")
    assert G(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    grid = np.asarray(Image.open(out / "samples" / "step_0000002.png"))
    assert grid.shape[2] == 3 and (grid[..., 0] == grid[..., 1]).all()  # gray shown as gray


def test_gray_to_rgb_cyclegan_and_pix2pix_build_their_networks_so(tmp_path, capsys):
    root = _gray_and_rgb_domains(tmp_path / "data")
    train(
        tiny(
            data=str(root), out=str(tmp_path / "c"), max_steps=1, input_nc=1, output_nc=3, lambda_identity=0.0
        )
    )
    nets = load_checkpoint(tmp_path / "c")["model"]["nets"]
    first = {
        k: v["model.0.weight" if k.startswith("D") else "model.1.weight"].shape[1] for k, v in nets.items()
    }
    assert first == {"G_AB": 1, "G_BA": 3, "D_A": 1, "D_B": 3}  # D_A judges A images (input_nc)
    run = read_generator_file(tmp_path / "c")  # what translate reads, either way
    assert run.generator("AtoB")(torch.zeros(1, 1, 32, 32)).shape[1] == 3
    assert run.generator("BtoA")(torch.zeros(1, 3, 32, 32)).shape[1] == 1
    # Exported with the run's own gray trainA images, converted to 1 channel, in the parity check.
    argv = ["export", "--checkpoint", str(tmp_path / "c"), "--onnx", str(tmp_path / "c.onnx"), "--size", "32"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert "(random, 4 real images)" in capsys.readouterr().out
    graph = onnx.load(tmp_path / "c.onnx").graph
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]
    log = (tmp_path / "c" / "train.log").read_text()
    assert "grayscale" not in log and "data: trainA: 1 image converted 16 to 8 bits\n" in log  # as stored

    write_pix2pix(tmp_path / "pairs", n=4, size=32)
    cfg = apply_overrides(
        pix2pix(),
        dict(
            data=str(tmp_path / "pairs"),
            out=str(tmp_path / "p"),
            netG="resnet_6blocks",
            ngf=4,
            ndf=4,
            load_size=32,
            crop_size=32,
            batch_size=2,
            max_steps=1,
            num_workers=0,
            input_nc=1,
            output_nc=3,
        ),
    )
    train(cfg)
    nets = load_checkpoint(tmp_path / "p")["model"]["nets"]
    assert nets["G"]["model.1.weight"].shape[1] == 1 and nets["D"]["model.0.weight"].shape[1] == 1 + 3
    log = (tmp_path / "p" / "train.log").read_text()
    assert "data: train: 4 images converted RGB to grayscale\n" in log  # the left (input) halves only


def test_grayscale_demo_trains_and_evaluates(tmp_path):
    result = train(tiny(out=str(tmp_path / "demo"), max_steps=1, input_nc=1, output_nc=1, load_size=80))
    translated, untranslated = result.demo_psnr
    assert 0 < translated < 60 and 0 < untranslated < 60  # finite dB over gray tiles, not a crash


def test_reference_pth_with_one_channel_imports_and_exports(tmp_path, capsys):
    """A reference generator state dict trained with --input_nc 1 --output_nc 1: read with the flags,
    exported to ONNX (fp32 and fp16) with a parity check on 1-channel inputs, and to safetensors."""
    net = build_generator("resnet_6blocks", ngf=4, input_nc=1, output_nc=1)
    torch.save(net.state_dict(), tmp_path / "latest_net_G_A.pth")
    arch = ["--netG", "resnet_6blocks", "--ngf", "4", "--input-nc", "1", "--output-nc", "1"]
    for fp16 in ([], ["--fp16"]):
        onnx_path = tmp_path / f"g{len(fp16)}.onnx"
        argv = ["export", "--checkpoint", str(tmp_path / "latest_net_G_A.pth"), *arch]
        assert main([*argv, "--onnx", str(onnx_path), "--size", "32", "--device", "cpu", *fp16]) == 0
        out = capsys.readouterr().out
        assert "parity onnxruntime vs PyTorch (random)" in out
        model = onnx.load(onnx_path)
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [1, 32, 32]
        meta = read_metadata(onnx_path)
        assert (meta["fastcycle.input_nc"], meta["fastcycle.output_nc"]) == ("1", "1")
    st = tmp_path / "g.safetensors"
    argv = ["export", "--checkpoint", str(tmp_path / "latest_net_G_A.pth"), *arch, "--safetensors", str(st)]
    assert main(argv) == 0
    with safe_open(str(st), "pt") as f:
        recorded = json.loads(f.metadata()["fastcycle.arch"])
    assert (recorded["input_nc"], recorded["output_nc"]) == (1, 1)
    back = read_generator_file(st)
    assert torch.equal(back.generator().model[1].weight, net.model[1].weight)
    wrong = ["export", "--checkpoint", str(tmp_path / "latest_net_G_A.pth"), "--netG", "resnet_6blocks"]
    assert main([*wrong, "--ngf", "4", "--onnx", str(tmp_path / "x.onnx"), "--size", "32"]) == 2  # 3 != 1


def test_a_distilled_student_takes_its_teachers_channels(tmp_path, capsys):
    """A 1 -> 3 CycleGAN teacher distilled BtoA (its G_BA: 3 -> 1) with the feature and GAN losses:
    the student's config, networks and report follow the teacher's channels."""
    root = _gray_and_rgb_domains(tmp_path / "data", n=6)
    channels = dict(input_nc=1, output_nc=3, lambda_identity=0.0)
    train(tiny(data=str(root), out=str(tmp_path / "t"), max_steps=1, **channels))
    argv = ["distill", "--teacher", str(tmp_path / "t"), "--direction", "BtoA", "--out", str(tmp_path / "s")]
    assert (
        main([*argv, "--max-steps", "1", "--lambda-gan", "1", "--device", "cpu", "--report-size", "32"]) == 0
    )
    out = capsys.readouterr().out
    assert "distillation report:" in out
    assert "FID/KID not measured: no test images of the target domain in" in out  # the data has no testA/
    state = load_checkpoint(tmp_path / "s")
    m = state["config"]["model"]
    assert (m["input_nc"], m["output_nc"]) == (3, 1)
    assert state["model"]["nets"]["D"]["model.0.weight"].shape[1] == 1  # the teacher's D_A: A images
    assert read_generator_file(tmp_path / "s").generator()(torch.zeros(1, 3, 32, 32)).shape[1] == 1


def test_the_results_page_shows_a_16_bit_gray_image_as_gray(tmp_path):
    """PIL's convert would clip every 16-bit value over 255 to white; the thumbnail keeps the ramp."""
    from fastcycle.gallery import _thumbnail

    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64, 1)
    write_image(ramp, tmp_path / "deep.png")
    thumb = np.asarray(Image.open(_thumbnail(tmp_path / "deep.png", tmp_path, "output", 32)))
    assert thumb.shape == (32, 32, 3)
    # A linear ramp averages mid-gray (127.5), downscaled or not; clipped to white it would average ~254.
    assert abs(thumb.mean() - 127.5) < 4


def test_a_grayscale_dcgan_makes_one_channel_images(tmp_path):
    write_discs(tmp_path / "discs", 4)  # red discs on blue: read as their luminance
    overrides = dict(data=str(tmp_path / "discs"), out=str(tmp_path / "run"), ngf=4, ndf=4, batch_size=2)
    train(apply_overrides(dcgan(), {**overrides, "max_steps": 1, "num_workers": 0, "output_nc": 1}))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "data: discs: 4 images converted RGB to grayscale\n" in log
    G = read_generator_file(tmp_path / "run").generator()
    assert G(torch.zeros(2, 100, 1, 1)).shape == (2, 1, 64, 64)
    assert load_checkpoint(tmp_path / "run")["model"]["nets"]["D"]["main.0.weight"].shape[1] == 1
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--n", "4", "--out", str(out)]) == 0
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert (pixels[..., 0] == pixels[..., 2]).all()  # gray shown as gray
