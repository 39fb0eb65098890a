"""ONNX export of a generator through the torch.export-based exporter, checked for TensorRT's parser.

The graph takes `image` (batch, input_nc, H, W) float32 in [-1, 1] (pixel / 127.5 - 1, RGB or one gray
channel, NCHW) and returns `translated` (batch, output_nc, H, W) in the same convention; the batch is
dynamic, and with `dynamic_hw` so are H and W (as multiples of 4 for the ResNet generators' two
stride-2 convs, of 256 / 128 for the U-Nets); the channels are fixed and recorded in the metadata
(`fastcycle.input_nc`, `fastcycle.output_nc`). A DCGAN generator takes `noise` (batch, nz, 1, 1) and
returns `image` (batch, output_nc, 64, 64).

The ResNet generator exports to exactly Conv, ConvTranspose, Pad(reflect), InstanceNormalization, Relu,
Add and Tanh (plus Cast with --fp16); the U-Net adds LeakyRelu and Concat, batch norm (pix2pix, DCGAN)
BatchNormalization: every one a native layer of TensorRT's ONNX parser.

--fp16 converts weights and activations to fp16 except instance norm, which computes in fp32 (Cast ->
InstanceNormalization -> Cast): its variance over a 64x64 plane of fp16 activations loses most of its
bits, a known source of large errors in ONNX Runtime and TensorRT. The interface stays float32.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError
from fastcycle.trained import image_channels

INPUT, OUTPUT = "image", "translated"
NOISE_INPUT, NOISE_OUTPUT = "noise", "image"  # a DCGAN generator's interface
CONVENTION = "float32 NCHW RGB in [-1, 1]: x = pixel / 127.5 - 1; output likewise"
# What TensorRT's ONNX parser turns into native layers, for this generator's graph.
TENSORRT_OPS = {
    "Conv",
    "ConvTranspose",
    "Pad",
    "InstanceNormalization",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Tanh",
    "Add",
    "Concat",
    "Cast",
}


class _Fp32Norm(nn.Module):
    """Instance norm in fp32 inside an fp16 network."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).to(x.dtype)


class _Fp16(nn.Module):
    """fp16 body, float32 interface: callers feed and read float32 whatever the engine computes in."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.half()
        for name, module in list(self.net.named_modules()):
            if isinstance(module, nn.InstanceNorm2d):
                parent = self.net.get_submodule(name.rpartition(".")[0]) if "." in name else self.net
                setattr(parent, name.rpartition(".")[2], _Fp32Norm(module))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


def check_graph(model) -> None:
    """Raise ValueError unless every node is one TensorRT's ONNX parser maps to a native layer."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    if ops - TENSORRT_OPS:
        raise ValueError(
            f"the ONNX graph has ops outside TensorRT's native set: {sorted(ops - TENSORRT_OPS)}"
        )
    for node in model.graph.node:
        if node.op_type == "Pad":
            mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
            if mode != "reflect":
                raise ValueError(f"Pad node {node.name} has mode {mode!r}; expected reflect")


def export_onnx(
    net: nn.Module,
    path: str | Path,
    *,
    fp16: bool = False,
    dynamic_hw: bool = False,
    size: int = 256,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export the eval-mode generator to `path` (written atomically); returns the path."""
    import onnx

    path = Path(path)
    model = copy.deepcopy(net).cpu().eval()
    if fp16:
        model = _Fp16(model).eval()
    nz = net.nz if net.spec.noise else None  # a DCGAN generator: noise in, 64x64 image out
    multiple = net.spec.size_multiple  # None for DCGAN
    if nz is None and size % multiple:
        raise UserError(f"--size {size} must be a multiple of {multiple} for this generator")
    # With dynamic H and W the example must not sit at one multiple: torch.export specialises a
    # dimension whose example value is 1 (here size / multiple), which would pin a U-Net at one size.
    side = max(size, 2 * multiple) if dynamic_hw and nz is None else size
    input_nc, output_nc = image_channels(net)  # a DCGAN generator's "input_nc" is nz
    example = torch.zeros(2, nz, 1, 1) if nz else torch.zeros(2, input_nc, side, side)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = {0: batch}
    if dynamic_hw and nz is None:
        # Multiples as a derived dimension: the exporter then proves that the downsampling divides.
        dims |= {
            2: multiple * torch.export.Dim("h", min=1, max=8192 // multiple),
            3: multiple * torch.export.Dim("w", min=1, max=8192 // multiple),
        }
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[NOISE_INPUT if nz else INPUT],
            output_names=[NOISE_OUTPUT if nz else OUTPUT],
            dynamic_shapes=(dims,),
            opset_version=18,
            verbose=False,
        )
    proto = program.model_proto
    info = {"fastcycle.convention": CONVENTION, "fastcycle.dtype": "fp16" if fp16 else "fp32"}
    if multiple:
        info["fastcycle.size_multiple"] = str(multiple)  # what translate pads H and W up to
        info["fastcycle.input_nc"] = str(input_nc)  # 1: grayscale, 3: RGB
    info["fastcycle.output_nc"] = str(output_nc)
    info |= {f"fastcycle.{k}": v for k, v in (metadata or {}).items()}
    onnx.helper.set_model_props(proto, info)
    check_graph(proto)
    return write_atomic(path, lambda tmp: onnx.save(proto, tmp))  # a failed export keeps a good file


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError, ... for a file that is not a model
        raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__}); re-export it") from e
    return {p.key: p.value for p in model.metadata_props}


def metadata_for(config: dict | None, direction: str) -> dict[str, str]:
    from fastcycle.version import __version__

    info = {"version": __version__, "direction": direction}
    if config is not None:
        info["config"] = json.dumps(config, sort_keys=True)
    return info
