"""ONNX Runtime as a translate backend: the CUDA execution provider with IO binding, else the CPU one.

With CUDA, the input and output are bound to torch tensors' device memory (IO binding), so a batch
goes from the decode pipeline's device tensor into the session and back without a host copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastcycle.errors import UserError
from fastcycle.export.onnx import CONVENTION, INPUT, read_metadata
from fastcycle.runner import UNRECORDED_SIZE_MULTIPLE


def _missing(path: Path, option: str, extra: str = "") -> str:
    """One line for an exported file that is not there: what the path is, and the command to make it."""
    what = "is a folder, not an exported file" if path.is_dir() else "does not exist"
    command = f"fastcycle export --checkpoint RUN {option} {path}" + (f" {extra}" if extra else "")
    return (
        f"{path} {what}; export one with `{command}` (RUN: the run folder), or give translate the run "
        "folder itself, which exports into it"
    )


class OrtRunner:
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: torch.device, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise UserError(
                "--backend onnxruntime needs ONNX Runtime: pip install 'fastcycle[onnx]' (onnxruntime-gpu)"
            ) from e
        path = Path(path)
        if not path.is_file():
            raise UserError(_missing(path, "--onnx", "--dynamic-hw"))
        meta = read_metadata(path)
        if meta.get("fastcycle.convention") != CONVENTION:
            raise UserError(
                f"{path} was not exported by `fastcycle export` (no fastcycle metadata); re-export it"
            )
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            index = device.index if device.index is not None else torch.cuda.current_device()
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise UserError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0]}") from e
        used = self.session.get_providers()[0]
        self.cuda = used == "CUDAExecutionProvider"
        self.device = device if self.cuda else torch.device("cpu")
        fallback = (
            " (no CUDA provider in this onnxruntime)" if device.type == "cuda" and not self.cuda else ""
        )
        self.note = f"onnxruntime {used}{fallback}, {meta.get('fastcycle.dtype', 'fp32')} model {path.name}"
        self.meta = meta
        self.size_multiple = int(meta.get("fastcycle.size_multiple", UNRECORDED_SIZE_MULTIPLE))
        # Fixed H and W unless exported with --dynamic-hw: ints here, symbolic names otherwise.
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.hw = [d if isinstance(d, int) else None for d in inputs[0].shape[2:]]
        self.input_name, self.output_name = (
            inputs[0].name,
            outputs[0].name,
        )  # image/translated, or noise/image
        self.image_to_image = self.input_name == INPUT
        self.out_chw = [d if isinstance(d, int) else None for d in outputs[0].shape[1:]]
        self.input_nc, self.output_nc = inputs[0].shape[1], outputs[0].shape[1]
        self.precision = meta.get("fastcycle.dtype", "fp32")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if any(want is not None and want != got for want, got in zip(self.hw, x.shape[2:], strict=True)):
            raise UserError(
                f"the ONNX model takes {self.hw[0]}x{self.hw[1]} images, not {x.shape[2]}x{x.shape[3]}; "
                "re-export with --dynamic-hw (or --size) to translate other sizes"
            )
        x = x.float().contiguous()
        if not self.cuda:
            return torch.from_numpy(
                self.session.run([self.output_name], {self.input_name: x.cpu().numpy()})[0]
            )
        # A translator keeps the input's H and W; a DCGAN's output shape is fixed in the graph.
        out_c = self.output_nc if self.image_to_image else self.out_chw[0]  # channels may differ from x's
        out_hw = x.shape[2:] if self.image_to_image else self.out_chw[1:]
        out = x.new_empty(x.shape[0], out_c, *out_hw)
        binding = self.session.io_binding()
        index = x.device.index or 0
        binding.bind_input(self.input_name, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output_name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        # ORT runs on its own stream: finish torch's work on x first; run_with_iobinding returns when done.
        torch.cuda.current_stream(x.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out
