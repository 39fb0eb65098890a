"""The `fastcycle` command: flags in, one line per problem out. Only fastcycle.__main__ imports it.

Parsing imports neither torch nor a backend (`fastcycle --help` is instant); each command imports what
it runs."""

from __future__ import annotations

import argparse
import difflib
import sys

from fastcycle.choices import DIRECTIONS, GENERATORS, KERNEL_CHOICES, NORMS
from fastcycle.config import ModelConfig, TrainConfig, apply_overrides, field_index, flag
from fastcycle.errors import UserError
from fastcycle.export.backends import BACKENDS
from fastcycle.presets import MODEL_PRESETS, PRESETS, STUDENT_INHERITS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UserError(f"{message} (see `{self.prog} --help`)")


class _SwitchOrMode(argparse.Action):
    """`--flag` (True), `--flag MODE` (one of `modes`) or `--no-flag` (False): a switch with modes."""

    def __init__(self, option_strings, dest, modes=(), **kw):
        self.modes = tuple(modes)
        negated = [s.replace("--", "--no-", 1) for s in option_strings]
        super().__init__([*option_strings, *negated], dest, nargs="?", metavar="|".join(modes), **kw)

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string.startswith("--no-"):
            if value is not None:
                parser.error(f"{option_string} takes no value (got {value!r})")
            value = False
        elif value is None:
            value = True
        elif value not in self.modes:
            parser.error(f"{option_string} takes no value or one of: {', '.join(self.modes)} (got {value!r})")
        setattr(namespace, self.dest, value)


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a CycleGAN, pix2pix or DCGAN (no --data: the built-in CycleGAN demo)",
        description="Train a model. Flags are the reference's options in kebab-case.",
    )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=argparse.SUPPRESS,
        help="starting configuration (default: --model's own, i.e. pix2pix or dcgan; for CycleGAN demo "
        "without --data, cyclegan with it)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (section, f) in field_index().items():
        if section != "distill":  # `fastcycle distill`'s
            _config_flag(groups.setdefault(section, p.add_argument_group(section)), name, f)
    return p


def _config_flag(g: argparse._ArgumentGroup, name: str, f, default: str | None = None) -> None:
    """The flag of config field `name` (default SUPPRESS: only what the user gives overrides)."""
    help = f"{f.metadata['help']} (default: {f.default if default is None else default})"
    kw = dict(default=argparse.SUPPRESS, help=help)
    if f.type == "bool":
        action = "store_true" if name.startswith("no_") else argparse.BooleanOptionalAction
        g.add_argument(flag(name), action=action, **kw)
    elif f.type == "bool | str":
        g.add_argument(flag(name), action=_SwitchOrMode, modes=f.metadata["modes"], **kw)
    else:
        typ = {"int": int, "float": float}.get(str(f.type), str)
        g.add_argument(flag(name), type=typ, choices=f.metadata.get("choices"), metavar=name.upper(), **kw)


# `fastcycle distill`'s config flags; the rest of a student's config comes from its teacher.
DISTILL_FLAGS = (
    ("student", ("netG", "ngf", "lambda_recon", "lambda_distill", "lambda_gan")),
    ("schedule", ("lr", "n_epochs", "n_epochs_decay", "batch_size", "ema_decay")),
    ("data", ("preprocess", "load_size", "crop_size", "max_dataset_size", "num_workers", "loader")),
    ("loader", ("prefetch", "cache_budget_gb")),
    ("runtime", ("device", "amp", "amp_dtype", "channels_last", "compile", "kernels", "seed")),
    ("run", ("name", "out", "resume", "max_steps", "log_every", "sample_every", "save_every", "tensorboard")),
)
_FROM_TEACHER = {
    "netG": "the mobile ResNet with the teacher's blocks for a ResNet teacher, else the teacher's",
    "ngf": "half the teacher's",
    "name": "<teacher folder>_student",
    **dict.fromkeys(STUDENT_INHERITS, "the teacher's"),
}


def _distill_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "distill",
        help="train a smaller student generator to reproduce a trained one (GAN Compression's distillation)",
        description="Distil a trained generator into a cheaper one on the teacher's own training images, "
        "then report both generators' cost, speed and the student's quality against the teacher.",
    )
    p.add_argument("--teacher", help="the teacher: a fastcycle CycleGAN or pix2pix run folder or checkpoint")
    p.add_argument(
        "--direction",
        choices=DIRECTIONS,
        help="which of a CycleGAN teacher's generators to distil (required for CycleGAN; pix2pix: its own)",
    )
    p.add_argument(
        "--report", metavar="RUN", help="only print (and rewrite) the report of a finished student run"
    )
    p.add_argument("--report-size", type=int, default=256, help="image side at which the report times both")
    index = field_index()
    for title, names in DISTILL_FLAGS:
        g = p.add_argument_group(title)
        for name in names:
            _config_flag(g, name, index[name][1], _FROM_TEACHER.get(name))
    return p


def _translate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("translate", help="translate a folder of images with a trained generator")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="fastcycle run folder or checkpoint, or a reference .pth (torch); or an exported .onnx, "
        ".plan (TensorRT) or .pt2 (AOTInductor) file",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="inference engine; auto: by the --checkpoint file's suffix (.onnx, .plan, .pt2), else torch",
    )
    p.add_argument("--input", required=True, help="folder of images to translate (searched recursively)")
    p.add_argument("--output", required=True, help="folder for the translations (PNG, same relative names)")
    p.add_argument("--direction", default=DIRECTIONS[0], choices=DIRECTIONS)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (same-size images)")
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast where the device runs it fast")
    p.add_argument("--workers", type=int, default=4, help="decode/encode threads")
    p.add_argument(
        "--html",
        action="store_true",
        help="also write <output>/index.html: input | output (| reconstruction for CycleGAN) thumbnails",
    )
    p.add_argument(
        "--kernels",
        default="auto",
        choices=KERNEL_CHOICES,
        help="generator layers: triton (fused kernels) or torch; auto: triton on CUDA when Triton works",
    )
    _reference_architecture(p)
    return p


def _reference_architecture(p: argparse.ArgumentParser) -> None:
    ref = p.add_argument_group("architecture of a reference .pth (fastcycle checkpoints carry their own)")
    default = ModelConfig()  # the paper's architecture, as for training
    ref.add_argument("--netG", default=default.netG, choices=GENERATORS)
    ref.add_argument("--ngf", type=int, default=default.ngf)
    ref.add_argument("--norm", default=default.norm, choices=NORMS)
    ref.add_argument(
        "--dropout", action="store_true", default=default.dropout, help="the .pth was trained with dropout"
    )


def _export_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a trained generator to ONNX, a TensorRT engine or an AOTInductor package",
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
    p.add_argument(
        "--device", default="auto", help="cuda, cuda:N, cpu or auto (AOTI target and parity checks)"
    )
    p.add_argument("--images", help="real images for the parity check (default: the run's testA or trainA)")
    _reference_architecture(p)
    return p


def _plot_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", help="draw a run's loss curves to a PNG")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's output folder (with metrics.jsonl)")
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/loss_curves.png)")
    return p


def _sample_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sample",
        help="DCGAN: image grids from noise, saved noise files and latent arithmetic",
        description="Generate images with a DCGAN run. Every grid's noise is saved beside it (.npy), so "
        "exemplars can be picked (--select) and combined (--arith).",
    )
    p.add_argument("--checkpoint", required=True, help="a --model dcgan run folder or checkpoint")
    p.add_argument(
        "--out", default="samples.png", help="grid PNG to write; its noise goes to the same name .npy"
    )
    p.add_argument("--n", type=int, default=64, help="images in the grid")
    p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same images")
    p.add_argument("--ncol", type=int, default=8, help="images per grid row")
    p.add_argument("--noise", help="draw from this saved noise file (.npy, one vector per row) instead")
    p.add_argument("--select", help="with --save-noise-to: grid positions (0-based, e.g. 3,7,12) to keep")
    p.add_argument("--save-noise-to", help="write the selected vectors as a concept file (.npy)")
    p.add_argument("--arith", help='latent arithmetic on concept files, e.g. "mask_man - man + woman"')
    p.add_argument("--noise-dir", default=".", help="where --arith finds NAME.npy")
    p.add_argument("--n-variants", type=int, default=7, help="--arith: jittered copies of the result")
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastcycle", description="Fast CycleGAN training and inference.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _train_parser(sub)
    _distill_parser(sub)
    _translate_parser(sub)
    _export_parser(sub)
    _sample_parser(sub)
    _plot_parser(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = next((u for u in unknown if u.startswith("-")), unknown[0])
        known = [
            o
            for a in parser._subparsers._group_actions[0].choices[args.command]._actions
            for o in a.option_strings
        ]
        close = difflib.get_close_matches(option.split("=")[0], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        shown = option if option.isprintable() else repr(option)  # one line, whatever was typed
        raise UserError(f"unknown option {shown} for `fastcycle {args.command}`{hint}")
    return args


def train_config(args: argparse.Namespace) -> TrainConfig:
    """`fastcycle train`'s flags -> the config (not yet validated): the preset, then the flags over it."""
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "preset")}
    if overrides.get("model") == "distill":
        raise UserError("--model distill is trained by `fastcycle distill --teacher RUN`")
    default = MODEL_PRESETS.get(overrides.get("model", "cycle_gan"), "cyclegan")
    if default == "cyclegan" and not overrides.get("data"):
        default = "demo"
    preset = getattr(args, "preset", default)
    return apply_overrides(PRESETS[preset](), overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from fastcycle.train import train  # deferred: `fastcycle --help` should not import torch

    result = train(train_config(args))  # train() validates it
    if result.demo_psnr is not None:
        from fastcycle.data.demo import psnr_line

        print(psnr_line(*result.demo_psnr))  # the demo's one-line verdict, on stdout for scripts
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    # deferred: `fastcycle --help` should not import torch
    from fastcycle.train.distill.command import run_distill

    given = vars(args)
    overrides = {name: given[name] for _, names in DISTILL_FLAGS for name in names if name in given}
    for line in run_distill(args.teacher, args.direction, args.report, args.report_size, overrides):
        print(line)
    return 0


def _generator_kw(args: argparse.Namespace) -> dict:
    return {"netG": args.netG, "ngf": args.ngf, "norm": args.norm, "dropout": args.dropout}


def cmd_translate(args: argparse.Namespace) -> int:
    from fastcycle.export.backends import open_runner, resolve_backend
    from fastcycle.export.cache import cached_export, needs_export
    from fastcycle.runtime import resolve_device, resolve_kernels, resolve_precision
    from fastcycle.trained import read_generator_file
    from fastcycle.translate import translate_folder

    device = resolve_device(args.device)
    precision = resolve_precision(args.amp, "auto", device)
    kernels, _ = resolve_kernels(args.kernels, device)
    kw = _generator_kw(args) | {"direction": args.direction, "kernels": kernels}
    model, backend = args.checkpoint, resolve_backend(args.backend, args.checkpoint)
    if needs_export(backend, model):  # a run or checkpoint for ONNX Runtime or AOTI: exported beside it
        model = cached_export(
            model, backend, args.direction, device, _generator_kw(args), max(32, args.batch_size)
        )
    elif backend == "torch":  # read once, for both directions if need be
        model = read_generator_file(args.checkpoint, args.direction, _generator_kw(args))
    runner = open_runner(args.backend, model, device, precision.dtype, kw)
    reverse = None
    if args.html and runner.name == "torch" and model.model == "cycle_gan":  # reconstructions need G_BA
        back = DIRECTIONS[1 - DIRECTIONS.index(args.direction)]
        reverse = open_runner("torch", model, device, precision.dtype, kw | {"direction": back})
    report = translate_folder(
        runner, args.input, args.output, args.batch_size, args.workers, html=args.html, reverse=reverse
    )
    for path in report.skipped:
        print(f"skipped unreadable image {path}", file=sys.stderr)
    rate = report.written / max(report.seconds, 1e-9)
    extra = f", {kernels} kernels" if runner.name == "torch" else ""
    print(
        f"translated {report.written} images to {args.output} ({rate:.1f} images/s, {runner.note}{extra}); "
        f"skipped {len(report.skipped)}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fastcycle.export.command import ExportRequest, run_export

    fields = ExportRequest.__dataclass_fields__
    req = ExportRequest(
        **{k: v for k, v in vars(args).items() if k in fields}, generator_kw=_generator_kw(args)
    )
    run_export(req)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from fastcycle.plot import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out)}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from fastcycle.checkpoint import load_checkpoint
    from fastcycle.runtime import resolve_device
    from fastcycle.sample import run_sample
    from fastcycle.trained import generator_from_checkpoint

    state = load_checkpoint(args.checkpoint)
    family = state["config"]["model"].get("model", "cycle_gan")
    if family != "dcgan":
        raise UserError(f"{args.checkpoint} is a {family} run; `fastcycle sample` needs a --model dcgan run")
    G = generator_from_checkpoint(state, "AtoB", "torch", str(args.checkpoint)).eval()
    lines = run_sample(
        G,
        resolve_device(args.device),
        n=args.n,
        seed=args.seed,
        out=args.out,
        noise=args.noise,
        arith=args.arith,
        noise_dir=args.noise_dir,
        select=args.select,
        save_noise_to=args.save_noise_to,
        ncol=args.ncol,
        n_variants=args.n_variants,
    )
    for line in lines:
        print(line)
    return 0


COMMANDS = {
    "train": cmd_train,
    "distill": cmd_distill,
    "translate": cmd_translate,
    "export": cmd_export,
    "sample": cmd_sample,
    "plot": cmd_plot,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parse(build_parser(), argv)
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"fastcycle: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastcycle: interrupted", file=sys.stderr)
        return 130
