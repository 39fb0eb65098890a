"""`fastcycle export --triton-repo`: a Triton model repository from a tiny trained CycleGAN. Each
config.pbtxt is parsed into Triton's own ModelConfig protobuf (tritonclient's model_config_pb2) and checked
against the ONNX graph beside it, and each graph against the torch generator on ONNX Runtime's CPU provider.

Not run here: a tritonserver with the ONNX Runtime or TensorRT backend (PyTriton bundles only the Python
backend), and the TensorRT engine build, which needs TensorRT (its gate is tested).
"""

import json
import shutil
import sys
from pathlib import Path

import onnx
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from fastcycle.cli import main
from fastcycle.errors import UserError
from fastcycle.export.command import ExportRequest, run_export
from fastcycle.export.ort import OrtRunner
from fastcycle.export.parity import TOLERANCE
from fastcycle.export.triton_repo import (
    MARKER,
    TritonOptions,
    model_config,
    model_names,
    require_model_config,
    write_repo,
)
from fastcycle.train import train
from fastcycle.trained import load_generator
from tests.conftest import write_images
from tests.test_train import tiny

CPU = torch.device("cpu")
DIRECTIONS = ["AtoB", "BtoA"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny CycleGAN run and two repositories: "dyn", the run's two generators in fp32 with dynamic H and
    W and batching flags; "fp16", its G_BA alone from a .safetensors file (a one-generator file: one
    model), fp16 at a fixed 32x32 with the ONNX Runtime backend's TensorRT accelerator."""
    root = tmp_path_factory.mktemp("triton")
    write_images(root / "data" / "trainA", 4, size=(40, 36), seed=1)
    write_images(root / "data" / "trainB", 4, size=(40, 36), seed=2)
    write_images(root / "data" / "testA", 3, size=(44, 36), seed=3)
    train(tiny(data=str(root / "data"), out=str(root / "run"), max_steps=1))
    said = {"dyn": [], "fp16": []}
    dyn = ExportRequest(str(root / "run"), size=32, device="cpu", triton_repo=str(root / "repos" / "dyn"))
    dyn.dynamic_hw, dyn.batch, dyn.triton_queue_delay_us, dyn.triton_instances = True, "1:4:16", 500, 2
    run_export(dyn, say=said["dyn"].append)
    g_ba = root / "G_BA.safetensors"
    run_export(ExportRequest(str(root / "run"), direction="BtoA", safetensors=str(g_ba)), say=print)
    fp16 = ExportRequest(
        str(g_ba), direction="BtoA", size=32, device="cpu", triton_repo=str(root / "repos" / "fp16")
    )
    fp16.fp16, fp16.triton_accelerator, fp16.triton_preferred_batch = True, "tensorrt", "2,8"
    run_export(fp16, say=said["fp16"].append)
    (root / "said.json").write_text(json.dumps(said))
    return root


def _models(repo):
    return json.loads((repo / MARKER).read_text())["models"]


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _config(repo, name) -> model_config_pb2.ModelConfig:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _graph_io(values):
    """(name, Triton type name, dims without the batch axis) of ONNX graph inputs or outputs, read here
    independently of the exporter's own mapping."""
    types = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}
    out = []
    for v in values:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        assert dims[0] == -1  # the batch axis is dynamic: Triton batches along it
        out.append((v.name, types[v.type.tensor_type.elem_type], dims[1:]))
    return out


def _config_io(entries):
    return [(e.name, model_config_pb2.DataType.Name(e.data_type), list(e.dims)) for e in entries]


def test_layout_one_model_per_generator_and_nothing_left_beside(root):
    assert _files(root / "repos" / "dyn") == [
        MARKER,
        "AtoB/1/model.onnx",
        "AtoB/config.pbtxt",
        "BtoA/1/model.onnx",
        "BtoA/config.pbtxt",
    ]
    assert _files(root / "repos" / "fp16") == [MARKER, "BtoA/1/model.onnx", "BtoA/config.pbtxt"]
    assert sorted(p.name for p in (root / "repos").iterdir()) == ["dyn", "fp16"]  # no temporary folders
    marker = json.loads((root / "repos" / "dyn" / MARKER).read_text())
    assert marker["models"] == DIRECTIONS and marker["backend"] == "onnxruntime"
    assert marker["checkpoint"].endswith("checkpoint.pt") and _models(root / "repos" / "fp16") == ["BtoA"]


@pytest.mark.parametrize("repo", ["dyn", "fp16"])
def test_each_config_parses_into_model_config_and_matches_its_graph(root, repo):
    for name in _models(root / "repos" / repo):
        config = _config(root / "repos" / repo, name)
        model = onnx.load(root / "repos" / repo / name / "1" / "model.onnx")
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["fastcycle.direction"] == name  # the AtoB folder holds G_AB, BtoA G_BA
        assert (config.name, config.platform, config.backend) == (name, "onnxruntime_onnx", "onnxruntime")
        assert config.default_model_filename == "model.onnx"
        assert _config_io(config.input) == _graph_io(model.graph.input)
        assert _config_io(config.output) == _graph_io(model.graph.output)
        assert [i.name for i in config.input] == ["image"] and [o.name for o in config.output] == [
            "translated"
        ]


def test_dims_are_dynamic_with_dynamic_hw_and_the_size_without(root):
    assert list(_config(root / "repos" / "dyn", "AtoB").input[0].dims) == [3, -1, -1]
    assert list(_config(root / "repos" / "fp16", "BtoA").output[0].dims) == [3, 32, 32]


def test_batching_and_instances_follow_the_flags(root):
    dyn = _config(root / "repos" / "dyn", "AtoB")
    assert dyn.max_batch_size == 16  # --batch 1:4:16's MAX
    assert list(dyn.dynamic_batching.preferred_batch_size) == [4, 16]  # default: OPT and MAX
    assert dyn.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in dyn.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)
    ]
    fp16 = _config(root / "repos" / "fp16", "BtoA")
    assert fp16.max_batch_size == 32 and list(fp16.dynamic_batching.preferred_batch_size) == [2, 8]
    assert fp16.dynamic_batching.max_queue_delay_microseconds == 100 and fp16.instance_group[0].count == 1


def test_accelerator_block_only_when_asked(root):
    assert not _config(root / "repos" / "dyn", "AtoB").HasField("optimization")
    text = (root / "repos" / "fp16" / "BtoA" / "config.pbtxt").read_text()
    assert "gpu_execution_accelerator" in text
    accelerators = _config(root / "repos" / "fp16", "BtoA").optimization.execution_accelerators
    (trt,) = accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    assert dict(trt.parameters) == {
        "precision_mode": "FP16",  # --trt-precision's default
        "trt_profile_min_shapes": "image:1x3x32x32",  # --batch 1:8:32 at --size 32
        "trt_profile_opt_shapes": "image:8x3x32x32",
        "trt_profile_max_shapes": "image:32x3x32x32",
    }


def test_fp16_graph_keeps_a_float32_interface(root):
    model = onnx.load(root / "repos" / "fp16" / "BtoA" / "1" / "model.onnx")
    assert {p.key: p.value for p in model.metadata_props}["fastcycle.dtype"] == "fp16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)  # fp16 weights
    config = _config(root / "repos" / "fp16", "BtoA")
    assert [i.data_type for i in (*config.input, *config.output)] == [model_config_pb2.TYPE_FP32] * 2


@pytest.mark.parametrize("repo, dtype", [("dyn", "fp32"), ("fp16", "fp16")])
def test_each_model_computes_its_torch_generator(root, repo, dtype):
    shapes = [(3, 3, 32, 32), (2, 3, 48, 40)] if repo == "dyn" else [(3, 3, 32, 32)]
    outputs = {}
    for name in _models(root / "repos" / repo):
        net, runner = (
            load_generator(root / "run", name),
            OrtRunner(root / "repos" / repo / name / "1" / "model.onnx", CPU),
        )
        for shape in shapes:
            x = torch.rand(shape, generator=torch.Generator().manual_seed(shape[0])) * 2 - 1
            with torch.no_grad():
                want = net(x)
            # fp32: only the order of float sums differs; fp16: the export's own parity tolerance.
            assert (runner(x) - want).abs().max() <= TOLERANCE[dtype], (name, shape)
            outputs[name, shape] = want
    if repo == "dyn":
        assert not torch.equal(outputs["AtoB", shapes[0]], outputs["BtoA", shapes[0]])  # two models


def test_export_reports_each_models_parity(root):
    said = json.loads((root / "said.json").read_text())
    assert said["dyn"][0].startswith("AtoB: parity onnxruntime vs PyTorch (random, 3 real images): max abs ")
    assert said["dyn"][1].startswith("BtoA: parity onnxruntime vs PyTorch (random, 3 real images)")
    assert said["fp16"][0].startswith("BtoA: parity onnxruntime vs PyTorch (random): max abs ")
    assert said["fp16"][0].endswith("(tolerance 2e-02, fp16)")
    assert said["dyn"][-1] == (
        f"wrote Triton model repository {root / 'repos' / 'dyn'}: AtoB, BtoA (onnxruntime, max_batch_size 16)"
    )


def test_model_names_are_the_directions_serve_uses():
    assert model_names("cycle_gan", "BtoA") == ["AtoB", "BtoA"]  # both, whatever --direction says
    assert model_names("pix2pix", "AtoB") == ["AtoB"]
    assert model_names(None, "BtoA") == ["BtoA"]  # a reference .pth or safetensors file: the one it holds


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--triton-backend", "tensorrt", "--triton-accelerator", "tensorrt"],
            "is an option of the onnxruntime",
        ),
        (["--triton-backend", "tensorrt", "--dynamic-hw"], "builds an engine at --size; drop --dynamic-hw"),
        (["--triton-accelerator", "tensorrt", "--trt-precision", "bf16"], "accelerator takes fp32 or fp16"),
        (["--triton-accelerator", "tensorrt", "--triton-instance-kind", "cpu"], "a GPU accelerator"),
        (["--triton-preferred-batch", "8,4"], "'8,4' is not increasing batch sizes from 1 to --batch's MAX"),
        (["--triton-preferred-batch", "64"], "MAX (32), e.g. 8,32"),
        (["--triton-instances", "0"], "--triton-instances must be at least 1"),
        (["--batch", "4:8:16"], "--triton-repo serves batches from 1: use --batch 1:8:16"),
        (["--triton-backend", "onnx"], "argument --triton-backend: invalid choice: 'onnx'"),
    ],
)
def test_bad_flags_end_in_one_line_and_write_nothing(root, tmp_path, capsys, flags, message):
    argv = ["export", "--checkpoint", str(root / "run"), "--triton-repo", str(tmp_path / "repo")]
    assert main([*argv, "--size", "32", "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_it_did_not_write_is_refused_and_kept(root, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    req = ExportRequest(str(root / "run"), size=32, device="cpu")
    with pytest.raises(
        UserError, match=rf"^--triton-repo {tmp_path / 'models'} is a folder that this command"
    ):
        run_export(ExportRequest(**vars(req) | {"triton_repo": str(tmp_path / "models")}))
    with pytest.raises(UserError, match=r"is a file, not a folder; name a folder$"):
        run_export(ExportRequest(**vars(req) | {"triton_repo": str(tmp_path / "file")}))
    assert _files(tmp_path) == ["file", "models/notes.txt"]


def _copying(root, fail_at=None):
    """A build that puts the fp32 repository's graph of each model in place (no torch export)."""

    def build(name, version, scratch):
        if name == fail_at:
            raise OSError("disk full")
        return shutil.copy(root / "repos" / "dyn" / name / "1" / "model.onnx", version / "model.onnx")

    return build


def test_its_own_repository_is_replaced_whole_or_not_at_all(root, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(root / "repos" / "fp16", repo)  # a repository this command wrote
    before = {f: (repo / f).read_bytes() for f in _files(repo)}
    with pytest.raises(OSError, match="disk full"):  # BtoA fails after AtoB was written
        write_repo(repo, DIRECTIONS, _copying(root, fail_at="BtoA"), TritonOptions(), {})
    assert {f: (repo / f).read_bytes() for f in _files(repo)} == before
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary folder left
    write_repo(repo, ["AtoB"], _copying(root), TritonOptions(batch=(1, 2, 4)), {})
    assert _files(repo) == [MARKER, "AtoB/1/model.onnx", "AtoB/config.pbtxt"]
    assert _config(repo, "AtoB").max_batch_size == 4 and [p.name for p in tmp_path.iterdir()] == ["repo"]


@pytest.fixture
def no_tensorrt(monkeypatch):
    """`import tensorrt` raises ImportError, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_tensorrt_backend_without_tensorrt_is_one_line_and_writes_nothing(root, tmp_path, no_tensorrt):
    repo = tmp_path / "repo"
    shutil.copytree(root / "repos" / "dyn", repo)
    before = {f: (repo / f).read_bytes() for f in _files(repo)}
    req = ExportRequest(
        str(root / "run"), size=32, device="cpu", triton_repo=str(repo), triton_backend="tensorrt"
    )
    with pytest.raises(UserError) as err:
        run_export(req)
    assert str(err.value).startswith("tensorrt is not installed: pip install 'fastcycle[tensorrt]'")
    assert "\n" not in str(err.value)
    assert {f: (repo / f).read_bytes() for f in _files(repo)} == before and len(list(tmp_path.iterdir())) == 1


def test_without_tritonclient_the_repository_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    with pytest.raises(UserError, match=r"^--triton-repo writes .* pip install 'fastcycle\[serve\]'$"):
        require_model_config()


def test_the_documented_config_is_what_the_command_writes():
    """docs/translation-and-export.md's config.pbtxt (condensed) against model_config for its flags on a
    graph with the exporter's interface at 256x256."""
    docs = (Path(__file__).parents[1] / "docs" / "translation-and-export.md").read_text()
    documented = docs.split("The example above writes, for `AtoB`:\n\n```\n", 1)[1].split("```", 1)[0]
    shape = ["batch", 3, 256, 256]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["translated"])],
        "g",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info("translated", onnx.TensorProto.FLOAT, shape)],
    )
    written = model_config("AtoB", graph, TritonOptions(accelerator="tensorrt", instances=2))
    assert text_format.Parse(documented, model_config_pb2.ModelConfig()) == written
