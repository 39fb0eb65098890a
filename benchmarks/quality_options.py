"""Quality beside speed: what each speed option does to the translations, measured on the built-in demo.

    python -m benchmarks.quality_options                      # this machine's device; writes the file below
    python -m benchmarks.quality_options --device cuda
    python -m benchmarks.quality_table --readme README.md     # the README's table from the newest file

Trains the demo once (fixed seed; its preset with the short schedule of tests/test_demo.py: 3 epochs +
3 of decay, 132 steps, no EMA), distils a student from it (`fastcycle distill`'s defaults), exports it to
ONNX in fp16 (`fastcycle export --onnx --fp16`), then translates the demo's held-out tiles (testA) with
each option, the whole set as one batch, and measures every translation the same way: PSNR against the
true map f(a) (only the demo has one), PSNR against eager fp32's own output (how far the option moves
the pixels), and FID and KID against testB (fastcycle.quality). Options: eager fp32 (the baseline: the
generator as the reference runs it, NCHW, float32), bf16 autocast (--amp), channels-last, torch.compile
(Inductor), the fused Triton kernels (--kernels triton; on a CPU under Triton's interpreter), the
distilled student (eager fp32) and the fp16 ONNX export on ONNX Runtime.

Writes benchmarks/results/quality/<device>-<yyyymmdd>-<sha>.json (--out: elsewhere): the device, the
environment, the command, the seed, the runs' configs and every option's numbers. These are quality
figures, not speed figures: the record's wall_s (per option, building it included, and for the whole
script) says what the run cost, on a CPU mostly Triton's interpreter, and nothing else is timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

# Without a GPU, Triton's kernels run under its CPU interpreter. Triton reads the variable when it and
# its language module are imported (the imports below import it), so it is set first, as in
# benchmarks/conftest.py.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from benchmarks import results
from fastcycle.atomic import write_atomic
from fastcycle.config import apply_overrides
from fastcycle.data import demo
from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.errors import UserError
from fastcycle.export.command import ExportRequest, run_export
from fastcycle.export.ort import OrtRunner
from fastcycle.presets import demo as demo_preset
from fastcycle.runner import run_padded
from fastcycle.runtime import resolve_device
from fastcycle.train import train
from fastcycle.train.distill.teacher import read_teacher, student_config
from fastcycle.trained import load_generator

QUALITY_DIR = results.RESULTS_DIR / "quality"  # not among the speed record's files (report.py's glob)
SCHEMA = "quality-1"
Run = Callable[[torch.Tensor], torch.Tensor]  # float32 (N, 3, H, W) in [-1, 1] -> the same, translated

# key -> (the table's label, what a user passes for it)
OPTIONS = {
    "eager": ("eager fp32", "the baseline: PyTorch eager, NCHW, float32"),
    "bf16": ("bf16 autocast", "`--amp` (torch.autocast, bfloat16)"),
    "channels_last": ("channels-last", "`--channels-last`"),
    "compile": ("torch.compile", "`--compile` (Inductor)"),
    "triton": ("fused Triton kernels", "`--kernels triton`"),
    "student": ("distilled student", "`fastcycle distill` (its defaults), eager fp32"),
    "onnx_fp16": ("ONNX fp16", "`fastcycle export --onnx --fp16`, ONNX Runtime"),
}


def torch_run(
    net: torch.nn.Module,
    device: torch.device,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    compile_backend: str | None = None,
) -> Run:
    """The generator as one option runs it: autocast dtype, memory layout, compiled or not."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=layout).eval().requires_grad_(False)
    # fullgraph: a graph break would run part of the generator eagerly and measure a mixture.
    forward = torch.compile(net, backend=compile_backend, fullgraph=True) if compile_backend else net

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return forward(x.contiguous(memory_format=layout)).float()

    return run


def train_demo_and_student(work: Path, args: argparse.Namespace) -> tuple[Path, Path, dict]:
    """The demo run and its distilled student, both at args.seed; their configs for the record."""
    schedule = dict(n_epochs=args.epochs, n_epochs_decay=args.epochs, max_steps=args.max_steps)
    common = dict(seed=args.seed, device=args.device, sample_every=0, report_fid=False, **schedule)
    overrides = dict(out=str(work / "demo"), ema_decay=0.0, **common)
    if args.ngf:
        overrides |= dict(ngf=args.ngf, ndf=args.ngf)
    teacher = train(apply_overrides(demo_preset(), overrides))
    cfg = student_config(read_teacher(teacher.run_dir), "AtoB", dict(out=str(work / "student"), **common))
    student = train(cfg)
    record = {}
    for name, run in (("demo", teacher), ("student", student)):
        m = json.loads((run.run_dir / "config.json").read_text())["model"]
        record[name] = {"netG": m["netG"], "ngf": m["ngf"], "norm": m["norm"], "steps": run.step}
    record["demo"]["psnr_vs_f_db_at_training_end"] = teacher.demo_psnr[0]
    return teacher.run_dir, student.run_dir, record


def build(key: str, teacher: Path, student: Path, work: Path, device: torch.device, args) -> tuple[Run, str]:
    """Option `key`'s Run, and what a user passes for it as this machine runs it."""
    from fastcycle.kernels.host import INTERPRETED

    how = OPTIONS[key][1]
    if key == "bf16":
        return torch_run(load_generator(teacher), device, amp=torch.bfloat16), how
    if key == "channels_last":
        return torch_run(load_generator(teacher), device, channels_last=True), how
    if key == "compile":
        backend = args.compile_backend
        return torch_run(load_generator(teacher), device, compile_backend=backend), f"`--compile` ({backend})"
    if key == "triton":
        if device.type == "cpu" and not INTERPRETED:
            raise UserError("--kernels triton on a CPU runs under Triton's interpreter: TRITON_INTERPRET=1")
        # The demo's batch norm has no fused kernel: here the kernels are the reflect-pad convolutions.
        how += " (the reflect-pad convolutions; batch norm stays torch's)"
        how += ", under Triton's CPU interpreter" if INTERPRETED else ""
        return torch_run(load_generator(teacher, kernels="triton"), device), how
    if key == "student":
        return torch_run(load_generator(student), device), how
    if key == "onnx_fp16":
        path = work / "g16.onnx"
        request = ExportRequest(str(teacher), onnx=str(path), fp16=True, size=args.tile, device=args.device)
        run_export(request, say=lambda line: None)  # its own parity check refuses a broken export
        ort = OrtRunner(path, device)
        return (lambda x: ort(x.to(ort.device)).to(x.device)), f"{how} ({ort.session.get_providers()[0]})"
    return torch_run(load_generator(teacher), device), how  # eager


def measure(keys: list[str], teacher: Path, student: Path, work: Path, held, device, args) -> dict:
    """Every option's translations of the held-out tiles, measured against f(a), eager fp32 and testB."""
    inception = demo.extractor(device)  # UserError (one line) when no weights can be had
    x = to_model_range(held.a.to(device))
    options, eager = [], None
    for key in keys:
        start = time.monotonic()
        run, how = build(key, teacher, student, work, device, args)
        fake = to_uint8(run_padded(run, x, 4)).cpu()  # the demo's tiles: 80 = 20 x 4, no padding
        del run
        eager = fake if key == "eager" else eager
        quality = demo.fid_scores(held, fake, device, inception)
        diff = None if eager is None else (fake.int() - eager.int()).abs()
        options.append(
            {
                "key": key,
                "label": OPTIONS[key][0],
                "how": how,
                "psnr_vs_f_db": demo.psnr(fake, held.fa).mean().item(),
                "psnr_vs_eager_db": None if diff is None else demo.psnr(fake, eager).mean().item(),
                "max_diff_vs_eager": None if diff is None else int(diff.max()),
                "values_differing": None if diff is None else int((diff > 0).sum()),
                "values": fake.numel(),  # 8-bit values: tiles x channels x height x width
                **quality.translated.as_dict(),
                "wall_s": round(time.monotonic() - start, 1),  # building it included: compile, export
            }
        )
    untranslated = {"psnr_vs_f_db": demo.psnr(held.a_out, held.fa).mean().item()}
    return {"options": options, "untranslated": untranslated | quality.untranslated.as_dict()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m benchmarks.quality_options", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--seed", type=int, default=0, help="the demo's and the student's seed")
    p.add_argument(
        "--epochs", type=int, default=3, help="the demo's and the student's epochs, + as many of decay"
    )
    p.add_argument(
        "--max-steps", type=int, default=0, help="stop each run after this many steps (0: the schedule)"
    )
    p.add_argument("--ngf", type=int, default=0, help="the demo's generator filters (0: the preset's, 16)")
    p.add_argument("--tiles", type=int, default=0, help="the first N held-out tiles only (0: all of testA)")
    p.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated, of {', '.join(OPTIONS)}")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile's backend for `compile`")
    p.add_argument(
        "--out", type=Path, help=f"results file (default: {QUALITY_DIR}/<device>-<date>-<sha>.json)"
    )
    p.add_argument("--work", type=Path, help="folder for the runs and the export (default: a temporary one)")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Measure, write the record; its path. Bad input exits 2 with one `quality_options: error:` line."""
    args = _parser().parse_args(argv)
    keys = args.options.split(",")
    try:
        if unknown := [k for k in keys if k not in OPTIONS]:
            raise UserError(f"unknown option {unknown[0]}; choose from {', '.join(OPTIONS)}")
        device = resolve_device(args.device)
        # The baseline first: every other option's pixels are compared with its output.
        keys = ["eager", *(k for k in keys if k != "eager")] if "eager" in keys else keys
        started, env = time.monotonic(), results.environment()  # the commit measured: HEAD now
        with tempfile.TemporaryDirectory() as tmp:
            work = args.work or Path(tmp)
            teacher, student, runs = train_demo_and_student(work, args)
            held = demo.held_out(teacher / "demo_data")
            n = args.tiles or len(held.paths_A)
            held = dataclasses.replace(
                held,
                a=held.a[:n],
                fa=held.fa[:n],
                a_out=held.a_out[:n],
                paths_A=held.paths_A[:n],
                paths_B=held.paths_B[:n],
            )
            args.tile = held.a.shape[-1]  # the ONNX export's fixed side
            measured = measure(keys, teacher, student, work, held, device, args)
    except UserError as e:
        raise SystemExit(f"quality_options: error: {e}") from None
    record = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_sha": env["git_sha"],
        "device": str(device),
        "device_name": env["gpu"] if device.type == "cuda" else f"CPU: {cpu_name()}",
        "env": env | {"threads": torch.get_num_threads()},
        "command": "python -m benchmarks.quality_options " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "tiles": n,
        "runs": runs,
        **measured,
        "wall_s": round(time.monotonic() - started, 1),
    }
    day = record["created"][:10].replace("-", "")
    out = args.out or QUALITY_DIR / f"{results.gpu_slug(record['device_name'])}-{day}-{env['git_sha']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    print(f"quality_options: {out}")
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
