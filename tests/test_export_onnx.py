"""ONNX export of a trained checkpoint, ONNX Runtime (CPU provider) parity, and translate backends."""

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from fastcycle import __version__
from fastcycle.errors import UserError
from fastcycle.export.backends import open_runner
from fastcycle.export.command import ExportRequest, run_export
from fastcycle.export.onnx import TENSORRT_OPS, check_graph, export_onnx, read_metadata
from fastcycle.export.ort import OrtRunner
from fastcycle.export.parity import TOLERANCE
from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.models import build_generator
from fastcycle.runner import TorchRunner
from fastcycle.train import train
from fastcycle.trained import load_generator
from fastcycle.translate import translate_folder
from tests.conftest import write_images
from tests.test_train import tiny
from tests.tolerance import network_atol

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CycleGAN trained for a few steps, and fp32 (dynamic H/W) and fp16 ONNX exports of it."""
    root = tmp_path_factory.mktemp("export")
    write_images(root / "data" / "trainA", 4, size=(40, 36), seed=1)
    write_images(root / "data" / "trainB", 4, size=(40, 36), seed=2)
    write_images(root / "data" / "testA", 3, size=(44, 36), seed=3)
    train(tiny(data=str(root / "data"), out=str(root / "run"), max_steps=3))
    said = []
    run_export(
        ExportRequest(str(root / "run"), onnx=str(root / "g.onnx"), dynamic_hw=True, size=32), say=said.append
    )
    run_export(
        ExportRequest(str(root / "run"), onnx=str(root / "g16.onnx"), fp16=True, size=32), say=said.append
    )
    return root, said


def _net(root):
    return load_generator(root / "run", "AtoB")


def test_export_reports_parity_on_random_and_real_images(trained):
    _, said = trained
    fp32 = next(line for line in said if "tolerance 1e-04, fp32" in line)
    assert fp32.startswith("parity onnxruntime vs PyTorch (random, 3 real images): max abs ")
    assert any("tolerance 2e-02, fp16" in line for line in said)


def test_onnx_runtime_matches_pytorch_at_dynamic_batch_and_size(trained):
    root, _ = trained
    net, runner = _net(root), OrtRunner(root / "g.onnx", CPU)
    assert runner.note.startswith("onnxruntime CPUExecutionProvider, fp32 model")
    for shape in [(1, 3, 32, 32), (3, 3, 32, 32), (8, 3, 32, 32), (2, 3, 48, 40)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(shape[0])) * 2 - 1
        with torch.no_grad():
            want = net(x)
        # fp32 on both sides, only the order of float sums differs.
        assert (runner(x) - want).abs().max() <= TOLERANCE["fp32"], shape


def test_graph_is_tensorrt_friendly_and_carries_metadata(trained):
    root, _ = trained
    model = onnx.load(root / "g.onnx")
    ops = {n.op_type for n in model.graph.node}
    assert ops == {"Conv", "ConvTranspose", "Pad", "InstanceNormalization", "Relu", "Tanh", "Add"}
    assert all(
        a.s == b"reflect"
        for n in model.graph.node
        if n.op_type == "Pad"
        for a in n.attribute
        if a.name == "mode"
    )
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(
        isinstance(d, str) for d in (dims[0], dims[2], dims[3])
    )  # batch, H, W dynamic
    meta = read_metadata(root / "g.onnx")
    assert meta["fastcycle.version"] == __version__ and meta["fastcycle.direction"] == "AtoB"
    assert meta["fastcycle.convention"].startswith("float32 NCHW RGB in [-1, 1]")
    assert '"netG": "resnet_6blocks"' in meta["fastcycle.config"]


def test_fp16_export_keeps_instance_norm_in_fp32(trained):
    root, _ = trained
    model = onnx.shape_inference.infer_shapes(onnx.load(root / "g16.onnx"))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert norms and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(types.get(n.input[0]) == onnx.TensorProto.FLOAT16 for n in convs)
    assert {n.op_type for n in model.graph.node} <= TENSORRT_OPS
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = _net(root)(x)
    assert (OrtRunner(root / "g16.onnx", CPU)(x) - want).abs().max() <= TOLERANCE["fp16"]


def test_a_fixed_size_model_says_how_to_translate_other_sizes(trained):
    root, _ = trained
    with pytest.raises(UserError, match=r"takes 32x32 images, not 48x40; re-export with --dynamic-hw"):
        OrtRunner(root / "g16.onnx", CPU)(torch.zeros(1, 3, 48, 40))


def test_a_failed_export_leaves_the_good_file(trained, tmp_path):
    root, _ = trained
    good = tmp_path / "g.onnx"
    good.write_bytes((root / "g.onnx").read_bytes())

    class Broken(torch.nn.Module):
        spec = GENERATOR_SPECS["resnet_6blocks"]  # what export asks a generator before tracing it

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)  # and its channels, from its first and last convolution

        def forward(self, x):
            raise RuntimeError("broken")

    with pytest.raises(Exception, match="broken"):
        export_onnx(Broken(), good, size=32)
    assert good.read_bytes() == (root / "g.onnx").read_bytes() and len(list(tmp_path.iterdir())) == 1
    check_graph(onnx.load(good))


def test_export_errors_are_one_clear_line(trained, tmp_path):
    root, _ = trained
    with pytest.raises(UserError, match="nothing to export: pass --onnx"):
        run_export(ExportRequest(str(root / "run")))
    with pytest.raises(UserError, match="--size 30 must be a positive multiple of 4"):
        run_export(ExportRequest(str(root / "run"), onnx=str(tmp_path / "x.onnx"), size=30))
    (tmp_path / "junk.onnx").write_text("not a model")
    with pytest.raises(UserError, match="is not a readable ONNX model"):
        OrtRunner(tmp_path / "junk.onnx", CPU)
    with pytest.raises(
        UserError, match="does not exist; export one with `fastcycle export --checkpoint RUN --onnx"
    ):
        OrtRunner(tmp_path / "missing.onnx", CPU)


def test_translate_backends_write_the_same_images(trained, tmp_path):
    root, _ = trained
    said = []
    request = ExportRequest(
        str(root / "run"), aoti=str(tmp_path / "g.pt2"), dynamic_hw=True, size=32, batch="1:2:4"
    )
    run_export(request, say=said.append)
    assert said[-1].startswith("parity aoti vs PyTorch (random, 3 real images): max abs")
    outputs = {}
    backends = (("torch", root / "run"), ("onnxruntime", root / "g.onnx"), ("aoti", tmp_path / "g.pt2"))
    for name, model in backends:
        runner = open_runner("auto", model, CPU, None, {"direction": "AtoB"})
        assert runner.name == name
        report = translate_folder(runner, root / "data" / "testA", tmp_path / name, batch_size=2, workers=2)
        assert report.written == 3 and not report.skipped
        outputs[name] = [np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*.png"))]
    assert len(outputs["torch"]) == 3
    for name in ("onnxruntime", "aoti"):
        for a, b in zip(outputs["torch"], outputs[name], strict=True):
            assert a.shape == b.shape == (36, 44, 3)
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # within 1/255: rounding of equal floats


def test_unet_exports_with_dynamic_hw_and_translates_odd_sizes_like_torch(tmp_path):
    """A U-Net halves the image 7 times: the dynamic ONNX model takes multiples of 128, and translate
    pads an odd-sized image up to one (the pad multiple travels in the model's metadata)."""
    torch.manual_seed(0)
    net = build_generator("unet_128", ngf=4, norm="batch").eval()
    path = export_onnx(net, tmp_path / "u.onnx", dynamic_hw=True, size=128)
    check_graph(onnx.load(str(path)))  # every op one of TensorRT's native layers
    runner = OrtRunner(path, CPU)
    assert runner.size_multiple == 128
    x = torch.rand(2, 3, 256, 128) * 2 - 1
    with torch.no_grad():
        # fp32 both sides, only the order of float sums differs (tests/tolerance.py).
        torch.testing.assert_close(runner(x), net(x), atol=network_atol(net, x), rtol=0)
    write_images(tmp_path / "in", 2, size=(150, 100), seed=5)
    torch_out, ort_out = tmp_path / "t", tmp_path / "o"
    translate_folder(TorchRunner(net, CPU), tmp_path / "in", torch_out, workers=1)
    translate_folder(runner, tmp_path / "in", ort_out, workers=1)
    for f in sorted(torch_out.glob("*.png")):
        a, b = (np.asarray(Image.open(d / f.name)).astype(int) for d in (torch_out, ort_out))
        assert a.shape == (100, 150, 3)
        assert np.abs(a - b).max() <= 1  # the tolerance above can flip a rounding to uint8 at most by 1
