"""TensorRT export: the one-line errors without tensorrt, the --batch parser, the atomic writes, and (where
tensorrt and a GPU are present) a real engine against the torch generator.

No fake `tensorrt` module: a mock would only test the mock. Without tensorrt the real build is skipped.
"""

import importlib
import sys

import pytest
import torch

import fastcycle.export.trt as trt_module
from fastcycle.errors import UserError
from fastcycle.export.trt import (
    _io_fits,
    _logger,
    _write_atomic,
    build_engine,
    parse_batch_range,
    require_tensorrt,
)
from fastcycle.models import build_generator


@pytest.fixture
def no_tensorrt(monkeypatch):
    """`import tensorrt` raises ImportError, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def assert_install_hint(err: pytest.ExceptionInfo) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("tensorrt is not installed: pip install 'fastcycle[tensorrt]' (tensorrt>=10)")
    assert "NVIDIA GPU and driver" in msg and "--onnx" in msg and "--aoti" in msg


def test_module_imports_without_tensorrt(no_tensorrt):
    module = importlib.reload(trt_module)  # would raise if the module imported tensorrt at the top
    assert "tensorrt" not in vars(module) and "trt" not in vars(module)  # no binding to it either
    assert module.PRECISIONS == ("fp32", "fp16", "bf16") and module.TrtRunner.name == "tensorrt"
    assert module.parse_batch_range("1:8:32") == (1, 8, 32)  # what needs no tensorrt works
    with pytest.raises(UserError) as err:  # what needs it says how to install it
        module.require_tensorrt()
    assert_install_hint(err)


def test_require_tensorrt_says_how_to_install_it(no_tensorrt):
    with pytest.raises(UserError) as err:
        require_tensorrt()
    assert_install_hint(err)


def test_build_engine_without_tensorrt_writes_nothing(no_tensorrt, tmp_path):
    (tmp_path / "G.onnx").write_bytes(b"not used")
    with pytest.raises(UserError) as err:
        build_engine(tmp_path / "G.onnx", tmp_path / "G.plan", timing_cache=tmp_path / "timing.cache")
    assert_install_hint(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G.onnx"]


def test_runner_without_tensorrt(no_tensorrt, tmp_path):
    with pytest.raises(UserError) as err:
        trt_module.TrtRunner(tmp_path / "G.plan", torch.device("cuda"))
    assert_install_hint(err)


def test_runner_refuses_a_cpu_device(tmp_path):
    with pytest.raises(UserError, match=r"^the tensorrt backend runs on CUDA only, not on cpu; use --onnx"):
        trt_module.TrtRunner(tmp_path / "G.plan", torch.device("cpu"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1:8:32", (1, 8, 32)),
        ("8", (8, 8, 8)),
        (" 2:2:4 ", (2, 2, 4)),
        ("1:1:1", (1, 1, 1)),
        ("3:3:9", (3, 3, 9)),
    ],
)
def test_parse_batch_range(text, expected):
    assert parse_batch_range(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "0", "0:8:32", "8:1:32", "1:9:8", "1:8", "1:8:32:64", "1::32", "a:b:c", "-1:2:3", "1.5", "+8", "٣"],
)
def test_parse_batch_range_rejects(text):
    with pytest.raises(UserError) as err:
        parse_batch_range(text)
    msg = str(err.value)
    assert "\n" not in msg and repr(text) in msg and "MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX" in msg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(precision="int8"), r"--trt-precision 'int8' is not one of: fp32, fp16, bf16"),
        (dict(batch=(4, 2, 8)), r"--batch '4:2:8' is not MIN:OPT:MAX"),
        (dict(hw=(256, 254)), r"image size 256x254 must be positive multiples of 4"),
        (dict(hw=(0, 256)), r"image size 0x256 must be positive multiples of 4"),
    ],
)
def test_build_engine_checks_its_arguments_before_anything_else(no_tensorrt, tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        build_engine(tmp_path / "G.onnx", tmp_path / "G.plan", **kwargs)


@pytest.mark.parametrize(
    "inputs, outputs, fits",
    [
        ({"image": (-1, 3, -1, -1)}, ["translated"], True),  # fully dynamic
        ({"image": (-1, 3, 256, 256)}, ["translated"], True),  # what torch.onnx's dynamic batch gives
        ({"image": (8, 3, 256, 256)}, ["translated"], False),  # fixed batch 8, profile 1..32
        ({"image": (-1, 3, 128, 128)}, ["translated"], False),  # exported for another size
        ({"image": (-1, 1, 256, 256)}, ["translated"], True),  # grayscale (--input-nc 1)
        ({"image": (-1, -1, 256, 256)}, ["translated"], False),  # channels a profile cannot fix
        ({"image": (-1, 3, 256)}, ["translated"], False),
        ({"input": (-1, 3, 256, 256)}, ["translated"], False),
        ({"image": (-1, 3, 256, 256)}, ["output"], False),
        ({"image": (-1, 3, 256, 256), "mask": (-1, 1, 256, 256)}, ["translated"], False),
    ],
)
def test_io_fits(inputs, outputs, fits):
    assert _io_fits(inputs, outputs, (1, 32), (256, 256)) is fits


def test_io_fits_a_fixed_batch_only_with_that_batch():
    assert _io_fits({"image": (8, 3, 64, 64)}, ["translated"], (8, 8), (64, 64))


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "G.plan"
    _write_atomic(path, b"good plan")
    assert path.read_bytes() == b"good plan"
    with pytest.raises(TypeError):
        _write_atomic(path, object())  # fails mid-write: not a bytes-like object
    assert path.read_bytes() == b"good plan"
    assert [p.name for p in path.parent.iterdir()] == ["G.plan"]  # no temp file left behind
    _write_atomic(path, memoryview(b"new plan"))  # a buffer, as TensorRT's IHostMemory is
    assert path.read_bytes() == b"new plan"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines run on CUDA")
def test_engine_matches_the_torch_generator(tmp_path):
    pytest.importorskip("tensorrt")
    torch.manual_seed(0)
    G = build_generator("resnet_6blocks", ngf=8).eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    onnx_path = tmp_path / "G.onnx"
    torch.onnx.export(
        G,
        (x,),
        onnx_path,
        input_names=["image"],
        output_names=["translated"],
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=32)},),
    )
    with torch.no_grad():
        want = G.cuda()(x.cuda())
    cache = tmp_path / "timing.cache"
    # fp32: TF32 convolutions on both sides (cuDNN's default, TensorRT's default), summed in other orders.
    # fp16: 10-bit mantissas through 16 convolutions; instance norm is pinned to fp32, so no overflow.
    for precision, tol in (("fp32", dict(atol=1e-2, rtol=0)), ("fp16", dict(atol=5e-2, rtol=0))):
        plan = build_engine(
            onnx_path,
            tmp_path / f"G_{precision}.plan",
            precision=precision,
            batch=(1, 2, 4),
            hw=(64, 64),
            timing_cache=cache,
        )
        runner = trt_module.TrtRunner(plan, torch.device("cuda"))
        got = runner(x.cuda())
        assert got.dtype == torch.float32 and got.device == want.device
        torch.testing.assert_close(got, want, **tol)
        torch.testing.assert_close(runner(x[:1].cuda()), want[:1], **tol)  # another batch, same engine
    # The timing cache is TensorRT's: it reads back and is accepted for this GPU and TensorRT (mismatch not
    # ignored), serialises again to as many bytes (its entries, in whatever order), and holds more than an
    # empty cache's header: the layers the two builds timed.
    trt = require_tensorrt()
    config = trt.Builder(_logger()).create_builder_config()
    written = cache.read_bytes()
    read_back = config.create_timing_cache(written)
    assert read_back is not None and config.set_timing_cache(read_back, ignore_mismatch=False)
    assert len(bytes(read_back.serialize())) == len(written)
    assert len(written) > len(bytes(config.create_timing_cache(b"").serialize()))
    with pytest.raises(UserError, match=r"batch of 5 is outside the TensorRT engine's range 1\.\.4; rebuild"):
        runner(torch.zeros(5, 3, 64, 64, device="cuda"))
