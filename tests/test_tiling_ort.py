"""Tiled inference on ONNX Runtime (fastcycle.export.tiled_ort): an exported generator, in tiles."""

import pytest
import torch

from fastcycle.export.onnx import export_onnx
from fastcycle.export.ort import OrtRunner
from fastcycle.export.tiled_ort import OrtSegments, program_from_onnx
from fastcycle.models import build_generator
from fastcycle.tiling import TiledGenerator, program_from_module
from tests.tolerance import assert_close_in_net

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny generator and its ONNX export with dynamic H and W (one export for the module's tests)."""
    torch.manual_seed(0)
    net = build_generator("resnet_6blocks", ngf=4).eval()
    return net, export_onnx(net, tmp_path_factory.mktemp("onnx") / "g.onnx", dynamic_hw=True, size=32)


def test_ort_segments_give_ort_whole_image_result(exported, tmp_path):
    net, path = exported
    program = program_from_onnx(path)
    assert [op.kind for op in program.ops] == [op.kind for op in program_from_module(net).ops]
    assert program.size_multiple == 4 and program.in_channels == 3
    x = torch.rand(1, 3, 52, 76, generator=torch.Generator().manual_seed(1)) * 2 - 1
    want = OrtRunner(path, CPU)(x)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tiled = TiledGenerator(program, device=CPU, tile=24, scratch_dir=str(scratch), segments=OrtSegments())
    got = tiled(x)  # a 3 x 4 grid with a partial last row and column
    assert "onnxruntime (CPUExecutionProvider)" in tiled.note
    # Tolerance: the same sums in another order (ORT's kernels, the tiles' merged statistics).
    assert_close_in_net(got, want, net, x)
    assert list(scratch.iterdir()) == []


def test_load_translator_tiles_an_onnx_file_on_onnx_runtime(exported):
    """`fastcycle translate --checkpoint g.onnx --memory-limit ...`: the Translator reads the program from
    the graph and runs its tiles on ONNX Runtime, to the whole-image ORT result."""
    import numpy as np

    import fastcycle
    from fastcycle.tiling import tiled_bytes, whole_image_bytes

    _, path = exported
    image = (np.random.default_rng(0).random((512, 768, 3)) * 255).astype(np.uint8)
    whole = fastcycle.load_translator(path, device="cpu", say=lambda line: None)(image)
    program = program_from_onnx(path)
    need = whole_image_bytes(program, 1, 512, 768, torch.float32)
    limit = (need + tiled_bytes(program, 512, 768, 64, torch.float32)) // 2
    lines: list[str] = []
    out = fastcycle.load_translator(path, device="cpu", memory_limit=limit, say=lines.append)(image)
    assert any("tiled" in line and "onnxruntime" in line for line in lines), lines
    # The same sums in another order may round an 8-bit output the other way: 1 level.
    assert np.abs(out.astype(int) - whole).max() <= 1
