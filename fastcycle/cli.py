"""The `fastcycle` command: flags in, one line per problem out. Only fastcycle.__main__ imports it.

Parsing imports neither torch nor a backend (`fastcycle --help` is instant); each command imports what
it runs."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from typing import Any

from fastcycle.choices import DIRECTIONS
from fastcycle.cli_flags import Group, Parser, config_flag, device_flags
from fastcycle.cli_generators import eval_parser, export_parser, serve_parser, translate_parser
from fastcycle.config import TrainConfig, apply_overrides, field_index
from fastcycle.errors import UserError
from fastcycle.presets import MODEL_PRESETS, PRESETS, STUDENT_INHERITS


def _train_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(
        name,
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
    groups: dict[str, Group] = {}
    for name, (section, f) in field_index().items():
        if section != "distill":  # `fastcycle distill`'s
            if section not in groups:  # one heading per config section, in field order
                groups[section] = Group(p, section)
            config_flag(groups[section], name, f)
    return p


# `fastcycle distill`'s config flags by heading; the rest of a student's config comes from its teacher.
DISTILL_FLAGS = {
    "student": ("netG", "ngf", "lambda_recon", "lambda_distill", "lambda_gan"),
    "schedule": ("lr", "n_epochs", "n_epochs_decay", "batch_size", "ema_decay"),
    "data": ("preprocess", "load_size", "crop_size", "max_dataset_size", "num_workers", "loader"),
    "loader": ("prefetch", "cache_budget_gb"),
    "runtime": ("device", "amp", "amp_dtype", "channels_last", "compile", "kernels", "seed"),
    "run": (
        "name",
        "out",
        "resume",
        "max_steps",
        "log_every",
        "sample_every",
        "save_every",
        "tensorboard",
        "report_fid",
    ),
}
_FROM_TEACHER = {  # the flags whose default the student takes from its teacher
    "netG": "the mobile ResNet with the teacher's blocks for a ResNet teacher, else the teacher's",
    "ngf": "half the teacher's",
    "name": "<teacher folder>_student",
    **dict.fromkeys(STUDENT_INHERITS, "the teacher's"),
}


def _distill_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(
        name,
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
    for title, names in DISTILL_FLAGS.items():
        g = Group(p, title)
        for name in names:
            config_flag(g, name, index[name][1], _FROM_TEACHER.get(name))
    return p


def _plot_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(name, help="draw a run's loss curves to a PNG")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's output folder (with metrics.jsonl)")
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/loss_curves.png)")
    return p


def _sample_parser(sub: Any, name: str) -> Parser:
    p = sub.add_parser(
        name,
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
    device_flags(p, kernels=False)
    return p


def build_parser() -> Parser:
    """The `fastcycle` parser; `.commands[name]` is a subcommand's parser, whose `.actions` are its flags."""
    parser = Parser(prog="fastcycle", description="Fast CycleGAN training and inference.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    parser.commands = {name: add_flags(sub, name) for name, (add_flags, _) in COMMANDS.items()}
    return parser


def _parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = next((u for u in unknown if u.startswith("-")), unknown[0])
        known = [o for a in parser.commands[args.command].actions for o in a.option_strings]
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


def _request(request_type: type, args: argparse.Namespace) -> Any:
    """A command's request dataclass from its flags: the fields of the same name, and a reference .pth's
    architecture as generator_kw."""
    names = {f.name for f in dataclasses.fields(request_type)}
    generator_kw = {"netG": args.netG, "ngf": args.ngf, "norm": args.norm, "dropout": args.dropout}
    generator_kw |= {"input_nc": args.input_nc, "output_nc": args.output_nc}
    return request_type(**{k: v for k, v in vars(args).items() if k in names}, generator_kw=generator_kw)


# Each command imports what it runs only when it runs: `fastcycle --help` should not import torch.


def cmd_train(args: argparse.Namespace) -> int:
    from fastcycle.train import train

    result = train(train_config(args))  # train() validates it
    if result.demo_psnr is not None:
        from fastcycle.data.demo import psnr_line

        print(psnr_line(*result.demo_psnr))  # the demo's one-line verdict, on stdout for scripts
    if result.demo_quality is not None:
        print("\n".join(result.demo_quality.lines()))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from fastcycle.train.distill.command import run_distill

    given = vars(args)
    overrides = {name: given[name] for names in DISTILL_FLAGS.values() for name in names if name in given}
    for line in run_distill(args.teacher, args.direction, args.report, args.report_size, overrides):
        print(line)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from fastcycle.export.translate import TranslateRequest, run_translate

    run_translate(_request(TranslateRequest, args))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fastcycle.export.evaluate import EvalRequest, run_eval

    run_eval(_request(EvalRequest, args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fastcycle.export.command import ExportRequest, run_export

    run_export(_request(ExportRequest, args))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fastcycle.export.serve import ServeRequest, run_serve

    return run_serve(_request(ServeRequest, args))


def cmd_plot(args: argparse.Namespace) -> int:
    from fastcycle.plot import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out)}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from fastcycle.sample import sample_checkpoint

    options = {k: v for k, v in vars(args).items() if k not in ("command", "checkpoint", "device")}
    for line in sample_checkpoint(args.checkpoint, args.device, **options):
        print(line)
    return 0


COMMANDS = {  # name: (the function adding its parser, the function running it)
    "train": (_train_parser, cmd_train),
    "distill": (_distill_parser, cmd_distill),
    "translate": (translate_parser, cmd_translate),
    "eval": (eval_parser, cmd_eval),
    "export": (export_parser, cmd_export),
    "serve": (serve_parser, cmd_serve),
    "sample": (_sample_parser, cmd_sample),
    "plot": (_plot_parser, cmd_plot),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parse(build_parser(), argv)
        _, run = COMMANDS[args.command]
        return run(args)
    except UserError as e:
        print(f"fastcycle: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastcycle: interrupted", file=sys.stderr)
        return 130
