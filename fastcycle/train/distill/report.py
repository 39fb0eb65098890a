"""`fastcycle distill --report RUN`: what the student costs and how close it comes to its teacher.

Printed at the end of every distillation and written to <run>/distill_report.json: parameters and
multiply-adds of both generators (at the run's crop size and at the report size), their images/s side
by side with the same backend (PyTorch eager, fp32) on this machine, at batch 1 and 8 (32 on a GPU),
and the student's PSNR and SSIM against the teacher on the run's held-out images (at most
MAX_IMAGES, each at its own size); for a demo teacher, also both generators' PSNR against the demo's
true map f. With --report-fid (on by default), both generators' FID and KID: their translations of
the held-out images against the target domain's test images (testB for AtoB), which neither trained on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from fastcycle.atomic import write_atomic
from fastcycle.config import TrainConfig
from fastcycle.data import demo
from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.errors import UserError
from fastcycle.quality.distances import Quality, compare, statistics
from fastcycle.quality.features import inception_features
from fastcycle.quality.realsets import real_features
from fastcycle.runner import Runner, TorchRunner, run_padded
from fastcycle.train.distill.data import held_out_images, read_listed, target_images
from fastcycle.train.distill.measure import generator_cost, images_per_second, ssim
from fastcycle.train.distill.teacher import load_teacher, teacher_generator
from fastcycle.trained import read_generator_file

REPORT_NAME = "distill_report.json"
MAX_IMAGES = 100  # held-out images compared (the first, in file order)
MAX_REAL = 1000  # target test images FID/KID compare with: ~2 min of features on a CPU, cached after


def _load_average() -> float | None:
    """The 1-minute load average, recorded beside CPU timings (shared machines make them noisy)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@torch.no_grad()
def translate_images(
    net: Runner | torch.nn.Module, images: list[np.ndarray], device: torch.device, multiple: int
) -> list[torch.Tensor]:
    """(H, W, C) uint8 images, each at its own size -> (output C, H, W) uint8 translations by `net` (a runner
    or a generator), padded to `multiple` (its size multiple) and cropped back as `fastcycle translate`
    does."""
    out = []
    for img in images:
        x = to_model_range(torch.from_numpy(img.copy()).to(device).permute(2, 0, 1)[None])
        out.append(to_uint8(run_padded(net, x, multiple)[0]).cpu())
    return out


def fid_against_target(
    cfg: TrainConfig, run_dir: Path, paired: bool, translations: dict[str, list[torch.Tensor]], device
) -> dict:
    """FID and KID of each generator's translations (name -> (C, H, W) uint8 images) against the target
    domain's test images: {"real": where, "teacher": Quality.as_dict(), ...} or {"skipped": why}."""
    root = Path(cfg.data.data) if cfg.data.data is not None else run_dir / "demo_data"
    items, where = target_images(root, cfg.data.direction, paired)
    items = items[:MAX_REAL]
    if len(items) < 2:
        folder = ("testB/" if cfg.data.direction == "AtoB" else "testA/") + (" or test/" if paired else "")
        return {"skipped": f"no test images of the target domain in {root} ({folder}, 2 or more)"}
    try:
        net, sha = demo.extractor(device)
    except UserError as e:  # the distillation itself succeeded: the report says what is missing
        return {"skipped": str(e)}
    nc = cfg.model.output_nc
    if nc == 3 and not any(half for _, half in items):  # whole files: features cached by content
        real = real_features([Path(p) for p, _ in items], net, sha)[0]
    else:
        real = inception_features((img for _, img in read_listed(items, nc)), net)
    stats = statistics(real)  # shared by both generators' comparisons
    out: dict = {"real": where}
    for name, images in translations.items():
        out[name] = compare(inception_features(demo.hwc(images), net), real, stats).as_dict()
    return out


def build_report(run_dir: str | Path, device: torch.device, size: int = 256, fid: bool | None = None) -> dict:
    """Measure the student of `run_dir` against its teacher; writes and returns the report. fid: whether
    to measure FID and KID (None: as the run was configured, --report-fid)."""
    run_dir = Path(run_dir)
    student = read_generator_file(run_dir)  # UserError for a folder without a fastcycle checkpoint
    if student.model != "distill":
        raise UserError(f"{run_dir} is not a `fastcycle distill` run; pass the student's run folder")
    cfg = TrainConfig.from_dict(student.config)
    why = "the report compares a student with the teacher it learned from"
    if not Path(cfg.distill.teacher).is_file():
        raise UserError(f"the teacher of {run_dir}, {cfg.distill.teacher}, is gone; {why}")
    state, t = load_teacher(cfg, fix=why)
    direction = cfg.data.direction
    teacher = teacher_generator(state, t, direction, "torch", cfg.distill.teacher)
    del state
    # The generators as `fastcycle translate` runs them (TorchRunner: eager, no autograd).
    nets = {"teacher": TorchRunner(teacher, device), "student": TorchRunner(student.generator(), device)}
    multiple = max(net.size_multiple for net in nets.values())
    if size % multiple:
        raise UserError(f"--report-size {size}: these generators take multiples of {multiple}")
    report: dict = {"run": str(run_dir), "teacher_path": cfg.distill.teacher, "direction": direction}
    for name, m in (("teacher", t.model), ("student", cfg.model)):
        params, _ = generator_cost(m.netG, m.ngf, m.norm, size)
        sizes = sorted({cfg.data.crop_size, size})
        macs = {str(px): generator_cost(m.netG, m.ngf, m.norm, px)[1] for px in sizes}
        report[name] = {"netG": m.netG, "ngf": m.ngf, "params": params, "macs": macs}
    speed = {
        "backend": nets["teacher"].note,
        "size": size,
        "load_before": _load_average(),
    }
    for batch in (1, 32) if device.type == "cuda" else (1, 8):
        speed[f"batch_{batch}"] = images_per_second(nets, batch, size, device, input_nc=cfg.model.input_nc)
    speed["load_after"] = _load_average()
    report["images_per_s"] = speed

    images, where = held_out_images(run_dir, MAX_IMAGES, cfg.model.input_nc)
    if images:
        arrays = [img for _, img in images]
        ours, theirs = (
            translate_images(nets[k], arrays, device, nets[k].size_multiple) for k in ("student", "teacher")
        )
        pairs = list(zip(ours, theirs, strict=True))
        report["held_out"] = {
            "where": where,
            "images": len(images),
            "psnr_vs_teacher": float(np.mean([demo.psnr(s[None], t[None]).item() for s, t in pairs])),
            "ssim_vs_teacher": float(np.mean([ssim(s[None], t[None]).item() for s, t in pairs])),
        }
        if cfg.run.report_fid if fid is None else fid:
            paired = t.model.model == "pix2pix"
            outputs = {"teacher": theirs, "student": ours}
            report["fid_vs_target"] = fid_against_target(cfg, run_dir, paired, outputs, device)
    demo_root = run_dir / "demo_data"
    if cfg.data.data is None and direction == "AtoB" and demo_root.is_dir():  # the demo: f is known
        (t_db, base), (s_db, _) = (
            demo.evaluate(nets[k].net, demo_root, device, None, cfg.model.input_nc, cfg.model.output_nc)
            for k in ("teacher", "student")
        )
        report["demo_psnr_vs_f"] = {"teacher": t_db, "student": s_db, "untranslated": base}
    write_atomic(run_dir / REPORT_NAME, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report


def format_report(r: dict) -> str:
    """The report as the lines `fastcycle distill` prints."""
    t, s, speed = r["teacher"], r["student"], r["images_per_s"]
    sizes = list(s["macs"])  # "64", "256"
    lines = [f"distillation report: {r['run']} (student of {r['teacher_path']}, {r['direction']})"]
    lines.append(
        f"  {'':8} {'generator':28} {'params':>11}" + "".join(f" {f'MACs {x}x{x}':>14}" for x in sizes)
    )
    for name, g in (("teacher", t), ("student", s)):
        arch = f"{g['netG']} ngf {g['ngf']}"
        macs = "".join(f" {g['macs'][x] / 1e9:>12.3f} G" for x in sizes)
        lines.append(f"  {name:8} {arch:28} {g['params']:>11,}{macs}")
    ratios = "".join(f" {t['macs'][x] / s['macs'][x]:>13.1f}x" for x in sizes)
    lines.append(f"  {'teacher/student':37} {t['params'] / s['params']:>10.1f}x{ratios}")
    load = speed["load_before"]
    loads = f"; load average {load:.1f} before, {speed['load_after']:.1f} after" if load is not None else ""
    lines.append(f"images/s, {speed['backend']}, {speed['size']}x{speed['size']}, side by side{loads}:")
    for key in (k for k in speed if k.startswith("batch_")):
        v = speed[key]
        lines.append(
            f"  batch {key[6:]}: teacher {v['teacher']:.2f}, student {v['student']:.2f} "
            f"({v['student'] / v['teacher']:.1f}x)"
        )
    if "held_out" in r:
        h = r["held_out"]
        lines.append(
            f"student vs teacher on {h['images']} held-out images ({h['where']}): "
            f"PSNR {h['psnr_vs_teacher']:.2f} dB, SSIM {h['ssim_vs_teacher']:.4f}"
        )
    if "fid_vs_target" in r:
        q = r["fid_vs_target"]
        if "skipped" in q:
            lines.append(f"FID/KID not measured: {q['skipped']}")
        else:
            lines.append(f"FID/KID of the translations of the held-out images vs {q['real']}:")
            lines += [f"  {Quality(**q[name]).line(name)}" for name in ("teacher", "student")]
    if "demo_psnr_vs_f" in r:
        d = r["demo_psnr_vs_f"]
        lines.append(
            f"PSNR vs the demo's true map f(a) on its held-out tiles: teacher {d['teacher']:.2f} dB, "
            f"student {d['student']:.2f} dB (untranslated a: {d['untranslated']:.2f} dB)"
        )
    return "\n".join(lines)
