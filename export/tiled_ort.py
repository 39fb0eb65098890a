"""Tiled inference on ONNX Runtime: an exported generator's graph as a fastcycle.tiling program, and its
segments as small ONNX models, so that `--backend onnxruntime` tiles too, also for a bare .onnx file.

program_from_onnx reads a graph exported by fastcycle.export.onnx (opset 18: Conv, ConvTranspose,
Pad(reflect), InstanceNormalization, BatchNormalization, Relu, LeakyRelu, Tanh, Add, Concat; with --fp16
the Casts around the norms, which the program drops: it computes in fp32) into the same program
program_from_module gives for the modules. OrtSegments builds one ONNX model per segment with dynamic H
and W, whose per-tile geometry (each op's crop, its pads at the image border, the slice it keeps) and
the whole image's normalisation (per instance norm, a scale and a shift) are inputs, so one session per
segment serves every tile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastcycle.tiling.program import Op, Program, size_multiple
from fastcycle.tiling.segments import Norms


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def program_from_onnx(path: str | Path) -> Program:
    """The layer program of an ONNX generator exported by fastcycle; ValueError for other ops."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    t = lambda name: torch.from_numpy(np.array(consts[name], dtype=np.float32))  # noqa: E731
    names = {graph.input[0].name: "x"}  # ONNX tensor name -> program buffer name
    ops: list[Op] = []

    def emit(kind: str, node, inputs: tuple[str, ...], **params) -> None:
        out = f"{kind}{len(ops)}"
        ops.append(Op(kind, tuple(names[i] for i in inputs), out, **params))
        names[node.output[0]] = out

    for node in graph.node:
        a, ins = _attrs(node), list(node.input)
        kind = node.op_type
        if kind == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(a["value"])
        elif kind in ("Cast", "Identity", "Dropout"):
            names[node.output[0]] = names[ins[0]]
        elif kind in ("Conv", "ConvTranspose"):
            if any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("auto_pad", b"NOTSET") not in (
                b"NOTSET",
                "NOTSET",
            ):
                raise ValueError(f"cannot tile {node.name}: dilation or auto_pad")
            top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
            bias = t(ins[2]) if len(ins) > 2 and ins[2] else None
            extra = (
                {"output_padding": tuple(a.get("output_padding", [0, 0]))} if kind == "ConvTranspose" else {}
            )
            emit(
                "conv" if kind == "Conv" else "convT", node, (ins[0],), weight=t(ins[1]), bias=bias,
                stride=tuple(a.get("strides", [1, 1])), pads=(top, bottom, left, right),
                groups=a.get("group", 1), **extra,
            )  # fmt: skip
        elif kind == "Pad":
            mode = a.get("mode", b"constant")
            pads = [int(p) for p in consts[ins[1]]]  # [N, C, H, W begins, N, C, H, W ends]
            if (
                (mode.decode() if isinstance(mode, bytes) else mode) != "reflect"
                or pads[:2] != [0, 0]
                or pads[4:6] != [0, 0]
            ):
                raise ValueError(f"cannot tile {node.name}: only reflect padding of H and W")
            emit("pad", node, (ins[0],), pads=(pads[2], pads[6], pads[3], pads[7]))
        elif kind == "InstanceNormalization":
            emit("inorm", node, (ins[0],), scale=t(ins[1]), bias=t(ins[2]), eps=a.get("epsilon", 1e-5))
        elif kind == "BatchNormalization":
            scale = t(ins[1]) / torch.sqrt(t(ins[4]) + a.get("epsilon", 1e-5))
            emit("affine", node, (ins[0],), scale=scale, bias=t(ins[2]) - t(ins[3]) * scale)
        elif kind in ("Relu", "Tanh"):
            emit(kind.lower(), node, (ins[0],))
        elif kind == "LeakyRelu":
            emit("lrelu", node, (ins[0],), slope=a.get("alpha", 0.01))
        elif kind == "Add" and all(i in names for i in ins):
            emit("add", node, tuple(ins))
        elif kind == "Concat" and a.get("axis") == 1:
            emit("cat", node, tuple(ins))
        else:
            raise ValueError(f"cannot tile an ONNX graph with a {kind} node ({node.name})")
    meta = {p.key: p.value for p in model.metadata_props}
    multiple = int(meta.get("fastcycle.size_multiple", size_multiple(ops)))
    first = next(op for op in ops if op.kind in ("conv", "convT"))
    c_in = first.weight.shape[1] * first.groups if first.kind == "conv" else first.weight.shape[0]
    return Program(ops, names[graph.output[0].name], c_in, multiple, name=Path(path).name)


class OrtSegments:
    """Each segment as an ONNX model in an onnxruntime.InferenceSession (the providers given, in order)."""

    name = "onnxruntime"

    def __init__(self, providers: list | None = None, threads: int = 0):
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads

    def bind(self, program: Program, segs, device: torch.device, amp_dtype: torch.dtype | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.segs, self.device = segs, torch.device("cpu")  # feeds and results are host arrays
        self.sessions = [
            ort.InferenceSession(_segment_model(seg).SerializeToString(), options, providers=self.providers)
            for seg in segs
        ]
        self.name = f"onnxruntime ({self.sessions[0].get_providers()[0]})"

    def run(self, index: int, inputs: dict[str, torch.Tensor], plan, norms: Norms) -> dict[str, torch.Tensor]:
        seg = self.segs[index]
        feed = {name: t.float().contiguous().numpy() for name, t in inputs.items()}
        for i, (op, step) in enumerate(zip(seg.ops, plan.steps, strict=True)):
            for j, (y0, y1, x0, x1) in enumerate(step.crops):
                feed[f"crop{i}_{j}_start"] = np.array([y0, x0], np.int64)
                feed[f"crop{i}_{j}_end"] = np.array([y1, x1], np.int64)
            if op.kind in ("pad", "conv"):
                top, bottom, left, right = step.pads
                feed[f"pads{i}"] = np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)
            if step.out is not None:
                feed[f"keep{i}_start"] = np.array([step.out[0], step.out[2]], np.int64)
                feed[f"keep{i}_end"] = np.array([step.out[1], step.out[3]], np.int64)
            if op.kind == "inorm":
                scale, shift = norms[op.output]
                feed[f"scale{i}"], feed[f"shift{i}"] = scale.numpy(), shift.numpy()
        results = self.sessions[index].run(seg.outputs, feed)
        return {name: torch.from_numpy(r) for name, r in zip(seg.outputs, results, strict=True)}


def _segment_model(seg):
    """One segment as an opset-18 ONNX model over tiles of any size; geometry and norms are inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, feeds = [], [], []
    image = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, None, None])  # noqa: E731

    def feed(name: str, dtype=TensorProto.INT64, shape=(2,)) -> str:
        feeds.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def init(name: str, value: torch.Tensor) -> str:
        inits.append(numpy_helper.from_array(value.numpy().astype(np.float32), name))
        return name

    axes = "axes"  # Slice over H and W
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), axes))
    for i, op in enumerate(seg.ops):
        xs = []
        for j, name in enumerate(op.inputs):
            out = f"in{i}_{j}"
            nodes.append(
                helper.make_node(
                    "Slice", [name, feed(f"crop{i}_{j}_start"), feed(f"crop{i}_{j}_end"), axes], [out]
                )
            )
            xs.append(out)
        raw = f"raw{i}" if op.kind in ("pad", "convT") else op.output
        x = xs[0]
        if op.kind == "pad":
            nodes.append(helper.make_node("Pad", [x, feed(f"pads{i}", shape=(8,))], [raw], mode="reflect"))
        elif op.kind == "conv":
            padded = f"padded{i}"
            nodes.append(
                helper.make_node("Pad", [x, feed(f"pads{i}", shape=(8,))], [padded], mode="constant")
            )
            args = [padded, init(f"w{i}", op.weight)] + (
                [init(f"b{i}", op.bias)] if op.bias is not None else []
            )
            nodes.append(helper.make_node("Conv", args, [raw], strides=list(op.stride), group=op.groups))
        elif op.kind == "convT":
            args = [x, init(f"w{i}", op.weight)] + ([init(f"b{i}", op.bias)] if op.bias is not None else [])
            nodes.append(
                helper.make_node("ConvTranspose", args, [raw], strides=list(op.stride), group=op.groups)
            )
        elif op.kind in ("inorm", "affine"):
            if op.kind == "inorm":
                scale, shift = (
                    feed(f"scale{i}", TensorProto.FLOAT, (1, None, 1, 1)),
                    feed(f"shift{i}", TensorProto.FLOAT, (1, None, 1, 1)),
                )
            else:
                scale, shift = (
                    init(f"s{i}", op.scale.view(1, -1, 1, 1)),
                    init(f"t{i}", op.bias.view(1, -1, 1, 1)),
                )
            nodes.append(helper.make_node("Mul", [x, scale], [f"scaled{i}"]))
            nodes.append(helper.make_node("Add", [f"scaled{i}", shift], [raw]))
        elif op.kind in ("relu", "tanh"):
            nodes.append(helper.make_node(op.kind.capitalize(), [x], [raw]))
        elif op.kind == "lrelu":
            nodes.append(helper.make_node("LeakyRelu", [x], [raw], alpha=op.slope))
        elif op.kind == "add":
            nodes.append(helper.make_node("Add", xs, [raw]))
        elif op.kind == "cat":
            nodes.append(helper.make_node("Concat", xs, [raw], axis=1))
        if raw != op.output:
            nodes.append(
                helper.make_node(
                    "Slice", [raw, feed(f"keep{i}_start"), feed(f"keep{i}_end"), axes], [op.output]
                )
            )
    graph = helper.make_graph(
        nodes, "segment", [image(n) for n in seg.inputs] + feeds, [image(n) for n in seg.outputs], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # what onnxruntime 1.20+ reads
    onnx.checker.check_model(model)
    return model
