"""Tiled inference on ONNX Runtime (fastcycle.export.tiled_ort): an exported generator, in tiles."""

import torch

from fastcycle.export.onnx import export_onnx
from fastcycle.export.ort import OrtRunner
from fastcycle.export.tiled_ort import OrtSegments, program_from_onnx
from fastcycle.models import build_generator
from fastcycle.tiling import TiledGenerator, program_from_module
from tests.tolerance import assert_close_in_net

CPU = torch.device("cpu")


def test_ort_segments_give_ort_whole_image_result(tmp_path):
    torch.manual_seed(0)
    net = build_generator("resnet_6blocks", ngf=4).eval()
    path = export_onnx(net, tmp_path / "g.onnx", dynamic_hw=True, size=32)
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
