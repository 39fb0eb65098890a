"""The Python API (fastcycle.load_translator) and `fastcycle translate` on anything: PIL images, 8- and
16-bit arrays, tensors, grayscale, any size (whole, smaller batches or tiled within --memory-limit),
resizing, single files, and folders holding images and videos."""

import numpy as np
import pytest
import torch
from PIL import Image

import fastcycle
from fastcycle.cli import main
from fastcycle.errors import UserError
from fastcycle.models import build_generator
from fastcycle.runner import TorchRunner
from fastcycle.trained import architecture, save_generator
from fastcycle.translator import TranslateOptions, Translator

CPU = torch.device("cpu")
# fp32 on both sides, the same convolutions; only the order of the norms' sums differs when tiled, and
# 8-bit outputs may then round the other way (1 level).
PIXEL_TOL = 1


def _generator(input_nc: int = 3, output_nc: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_generator("resnet_6blocks", ngf=4, input_nc=input_nc, output_nc=output_nc, init_gain=0.2)
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 3 -> 3 generator as a .safetensors file (architecture in its metadata)."""
    path = tmp_path_factory.mktemp("g") / "G.safetensors"
    save_generator(_generator(), path, architecture({"netG": "resnet_6blocks", "ngf": 4}), "AtoB")
    return path


def _photo(h: int, w: int, bits: int = 8, seed: int = 0) -> np.ndarray:
    """A smooth colour image with detail (gradients plus noise), so translations differ per pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([xx, yy, (xx + yy) / 2], -1) * 0.7 + rng.random((h, w, 3)) * 0.3
    top = 65535 if bits == 16 else 255
    return (base * top).round().astype(np.uint16 if bits == 16 else np.uint8)


def _reference(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """What the generator makes of one 8-bit image, computed directly."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        y = net(x)
    return ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)


def test_load_translator_takes_pil_arrays_tensors_and_lists(weights):
    t = fastcycle.load_translator(weights, device="cpu", say=lambda line: None)
    image = _photo(36, 52)
    want = _reference(_generator(), image)
    out = t(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.abs(out.astype(int) - want).max() <= PIXEL_TOL
    pil = t(Image.fromarray(image))
    assert isinstance(pil, Image.Image) and np.array_equal(np.asarray(pil), out)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W) in [-1, 1]
    y = t(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert (((y.permute(1, 2, 0) + 1) * 127.5).round().numpy() - want).__abs__().max() <= PIXEL_TOL
    batch = t(torch.from_numpy(np.stack([image, image])).permute(0, 3, 1, 2))  # uint8 (N, C, H, W)
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 36, 52)
    assert [a.shape for a in t([image, image[:20, :24]])] == [(36, 52, 3), (20, 24, 3)]


def test_16_bit_images_keep_16_bits_unless_asked(weights):
    t = fastcycle.load_translator(weights, device="cpu", say=lambda line: None)
    image16 = _photo(32, 32, bits=16)
    out16 = t(image16)
    assert out16.dtype == np.uint16
    # Full precision: the levels between two 8-bit levels are used (an 8-bit cut would leave
    # every value a multiple of 257).
    assert np.count_nonzero(out16 % 257) > out16.size // 2
    out8 = fastcycle.load_translator(weights, device="cpu", output_bits=8, say=lambda line: None)(image16)
    assert out8.dtype == np.uint8
    assert np.abs(out8.astype(int) - (out16 / 257).round()).max() <= PIXEL_TOL


def test_a_16_bit_image_into_a_bf16_backend_is_one_line():
    t = Translator(TorchRunner(_generator(), CPU, torch.bfloat16), say=lambda line: None)
    with pytest.raises(UserError, match=r"16-bit image and a bf16 backend.*--output-bits 8") as e:
        t(_photo(16, 16, bits=16))
    assert "\n" not in str(e.value)
    assert t(_photo(16, 16)).dtype == np.uint8  # 8-bit images are fine in bf16


def test_grayscale_generators_convert_what_they_are_given():
    lines: list[str] = []
    gray = _generator(input_nc=1, output_nc=1)
    t = Translator(TorchRunner(gray, CPU), say=lines.append)
    assert (t.input_nc, t.output_nc) == (1, 1)
    out = t(_photo(24, 24))  # RGB in: converted to luminance
    assert out.shape == (24, 24, 1) and any("RGB to" in line for line in lines)
    assert t(_photo(24, 24)[..., 0]).shape == (24, 24)  # (H, W) in, (H, W) out
    assert isinstance(t(Image.fromarray(_photo(24, 24)[..., 0])), Image.Image)


def test_resize_options():
    t = Translator(TorchRunner(_generator(), CPU), TranslateOptions(load_size=32), say=lambda line: None)
    assert t(_photo(30, 60)).shape == (16, 32, 3)  # the width scaled to 32, the aspect kept
    t = Translator(TorchRunner(_generator(), CPU), TranslateOptions(max_side=20), say=lambda line: None)
    assert t(_photo(40, 30)).shape == (20, 15, 3)
    assert t(_photo(16, 12)).shape == (16, 12, 3)  # small images are not enlarged
    keep = TranslateOptions(max_side=20, keep_size=True)
    assert Translator(TorchRunner(_generator(), CPU), keep, say=lambda line: None)(_photo(40, 30)).shape == (
        40,
        30,
        3,
    )
    with pytest.raises(UserError, match="--load-size must be positive"):
        TranslateOptions(load_size=0)


def test_a_small_memory_limit_tiles_and_gives_the_whole_image_result(weights):
    from fastcycle.tiling import program_from_module, tiled_bytes, whole_image_bytes

    image = _photo(512, 768)  # large enough that tiles need less than the whole pass (fixed costs)
    whole = fastcycle.load_translator(weights, device="cpu", say=lambda line: None)(image)
    program = program_from_module(_generator())
    need = whole_image_bytes(program, 1, 512, 768, torch.float32)
    limit = (need + tiled_bytes(program, 512, 768, 64, torch.float32)) // 2
    assert limit < need
    lines: list[str] = []
    out = fastcycle.load_translator(weights, device="cpu", memory_limit=limit, say=lines.append)(image)
    assert any("tiled (a whole pass needs" in line for line in lines), lines
    assert np.abs(out.astype(int) - whole).max() <= PIXEL_TOL
    # Two images whose pass together does not fit, but each one's does: one per pass.
    split = fastcycle.load_translator(weights, device="cpu", memory_limit=int(need * 1.5), say=lines.append)
    assert all(np.array_equal(a, whole) for a in split.translate_arrays([image, image]))
    assert any("1 per pass" in line for line in lines), lines


def test_an_image_too_large_even_for_tiles_is_one_line(weights):
    t = fastcycle.load_translator(weights, device="cpu", memory_limit=1000, say=lambda line: None)
    with pytest.raises(UserError, match="does not fit") as e:
        t(_photo(64, 64))
    assert "\n" not in str(e.value)


def test_translate_command_on_one_image_a_16_bit_png_and_a_folder_with_a_video(weights, tmp_path, capsys):
    from fastcycle.data.folders import read_image, write_image
    from tests.test_video import make_clip

    src = tmp_path / "in"
    write_image(_photo(40, 56), src / "a.png")
    write_image(_photo(32, 32, bits=16), src / "deep" / "b16.png")
    (src / "clips").mkdir()
    make_clip(src / "clips" / "c.mp4", n=6, size=(48, 32))
    code = main(
        [
            "translate",
            "--checkpoint",
            str(weights),
            "--input",
            str(src),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--workers",
            "1",
        ]
    )
    err = capsys.readouterr()
    assert code == 0, err.err
    assert "translated 3 files" in err.out and "6 video frames" in err.out
    assert read_image(tmp_path / "out" / "a.png")[0].shape == (40, 56, 3)
    assert read_image(tmp_path / "out" / "deep" / "b16.png")[0].dtype == np.uint16
    assert (tmp_path / "out" / "clips" / "c.mp4").stat().st_size > 0
    one = tmp_path / "one.png"
    assert (
        main(
            [
                "translate",
                "--checkpoint",
                str(weights),
                "--input",
                str(src / "a.png"),
                "--output",
                str(one),
                "--device",
                "cpu",
                "--max-side",
                "28",
            ]
        )
        == 0
    )
    assert read_image(one)[0].shape == (20, 28, 3)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--memory-limit", "lots"], "--memory-limit 'lots' is not a size"),
        (["--tile", "0"], "--tile must be positive"),
        (["--output-bits", "8", "--input", "missing.png"], "does not exist"),
    ],
)
def test_translate_flags_refuse_bad_values_in_one_line(weights, tmp_path, capsys, flags, message):
    argv = [
        "translate",
        "--checkpoint",
        str(weights),
        "--input",
        str(tmp_path),
        "--output",
        str(tmp_path / "o"),
        "--device",
        "cpu",
        *flags,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_compile_traces_one_graph_per_batch_class_for_every_size(weights):
    """load_translator(compile=...): the generator under torch.compile with dynamic shapes, so that a
    server's many image sizes share one graph. Dynamo's "eager" backend runs the traced graph with
    torch's kernels: the tracing and the guards are the ones --compile (Inductor) gets, without
    Inductor's C++ build, which costs a minute per graph on this CPU (tests/test_compile.py covers it)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = fastcycle.load_translator(weights, device="cpu", compile="eager", say=lambda line: None)
    eager = fastcycle.load_translator(weights, device="cpu", say=lambda line: None)
    assert "compiled (eager)" in compiled.note and "eager" in eager.note
    # Non-square first, as serve's warm-up: a square first image would trace H and W as one size (torch's
    # duck shaping) and the first non-square one recompile.
    for batch, (h, w) in [(1, (36, 52)), (1, (32, 32)), (2, (44, 40)), (3, (32, 32)), (2, (33, 47))]:
        images = [_photo(h, w, seed=i) for i in range(batch)]
        for got, want in zip(compiled.translate_arrays(images), eager.translate_arrays(images), strict=True):
            # The traced graph reaches some ops through other ATen paths (instance norm's sums among them),
            # so an 8-bit pixel may round the other way: one level.
            assert np.abs(got.astype(int) - want).max() <= PIXEL_TOL
    # A batch of one and of more are two graphs (torch specializes a size of 1); the sizes add none.
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])


def test_compile_of_an_exported_engine_is_one_line(tmp_path):
    # Refused by the backend's name (the .onnx suffix), before the file is opened.
    with pytest.raises(UserError, match="--compile compiles the torch backend's generator"):
        fastcycle.load_translator(tmp_path / "g.onnx", device="cpu", compile=True)


def test_many_sizes_say_the_whole_decision_once_and_keep_few_estimates(weights, monkeypatch):
    """A server sees as many image sizes as its clients send: one "run whole" line in all, and the
    memory estimates kept for the last SHAPES_KEPT shapes only."""
    import fastcycle.translator as translator_module

    monkeypatch.setattr(translator_module, "SHAPES_KEPT", 2)
    lines: list[str] = []
    t = fastcycle.load_translator(weights, device="cpu", say=lines.append)
    for h, w in [(32, 32), (36, 40), (44, 28), (32, 32)]:
        t.translate_arrays([_photo(h, w)])
    assert sum("images run whole" in line for line in lines) == 1, lines
    assert list(t._bytes) == [(1, 44, 28), (1, 32, 32)]  # the two latest, oldest first
