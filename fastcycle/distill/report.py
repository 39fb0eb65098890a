"""`fastcycle distill --report RUN`: what the student costs and how close it comes to its teacher.

Printed at the end of every distillation and written to <run>/distill_report.json: parameters and
multiply-adds of both generators (at the run's crop size and at the report size), their images/s side
by side with the same backend (PyTorch eager, fp32) on this machine, at batch 1 and 8 (32 on a GPU),
and the student's PSNR and SSIM against the teacher on the run's held-out images (at most
MAX_IMAGES, each at its own size); for a demo teacher, also both generators' PSNR against the demo's
true map f.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from fastcycle.atomic import write_atomic
from fastcycle.checkpoint import run_config
from fastcycle.config import TrainConfig
from fastcycle.data import demo
from fastcycle.distill.data import held_out_images
from fastcycle.distill.metrics import generator_cost, images_per_second, ssim
from fastcycle.distill.teacher import read_teacher
from fastcycle.errors import UserError

REPORT_NAME = "distill_report.json"
MAX_IMAGES = 100  # held-out images compared (the first, in file order)


def _load_average() -> float | None:
    """The 1-minute load average, recorded beside CPU timings (shared machines make them noisy)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@torch.no_grad()
def _translate_all(runner, images: list) -> list[torch.Tensor]:
    """(H, W, 3) uint8 images -> their translations as (3, H, W) uint8, same-size images batched by 8."""
    from fastcycle.translate import _run  # translate's pad-run-crop of one same-size batch

    out = []
    for i in range(0, len(images), 8):
        group = images[i : i + 8]
        sizes = {img.shape for img in group}
        chunks = [group] if len(sizes) == 1 else [[img] for img in group]
        for chunk in chunks:
            out += [torch.from_numpy(y).permute(2, 0, 1) for y in _run(runner, chunk)[0]]
    return out


def build_report(run_dir: str | Path, device: torch.device, size: int = 256) -> dict:
    """Measure the student of `run_dir` against its teacher; writes and returns the report."""
    from fastcycle.export.runner import TorchRunner
    from fastcycle.translate import load_generator

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    if config is None or config["model"].get("model") != "distill":
        raise UserError(f"{run_dir} is not a `fastcycle distill` run; pass the student's run folder")
    cfg = TrainConfig.from_dict(config)
    teacher = read_teacher(cfg.distill.teacher)
    if teacher.sha256 != cfg.distill.teacher_sha256:
        raise UserError(
            f"the teacher {teacher.path} changed since this student was distilled; the report compares a "
            "student with the teacher it learned from"
        )
    one_way = cfg.data.direction if teacher.family == "cycle_gan" else "AtoB"
    nets = {"teacher": load_generator(teacher.path, one_way), "student": load_generator(run_dir)}
    archs = {"teacher": teacher.config.model, "student": cfg.model}
    crop = cfg.data.crop_size
    report: dict = {"run": str(run_dir), "teacher_path": str(teacher.path), "direction": cfg.data.direction}
    for name, m in archs.items():
        params, _ = generator_cost(m.netG, m.ngf, m.norm, size)
        macs = {str(px): generator_cost(m.netG, m.ngf, m.norm, px)[1] for px in sorted({crop, size})}
        report[name] = {"netG": m.netG, "ngf": m.ngf, "params": params, "macs": macs}
    multiple = max(getattr(net, "size_multiple", 4) for net in nets.values())
    if size % multiple:
        raise UserError(
            f"--report-size {size}: these generators take multiples of {multiple}; use e.g. {multiple}"
        )
    for net in nets.values():
        net.to(device)
    speed = {"backend": f"torch eager fp32 on {device}", "size": size, "load_before": _load_average()}
    for batch in (1, 32) if device.type == "cuda" else (1, 8):
        speed[f"batch_{batch}"] = images_per_second(nets, batch, size, device)
    speed["load_after"] = _load_average()
    report["images_per_s"] = speed

    images, where = held_out_images(run_dir, MAX_IMAGES)
    if images:
        arrays = [img for _, img in images]
        ours, theirs = (_translate_all(TorchRunner(nets[k], device), arrays) for k in ("student", "teacher"))
        psnr = [demo.psnr(s[None], t[None]).item() for s, t in zip(ours, theirs, strict=True)]
        similarity = [ssim(s[None], t[None]).item() for s, t in zip(ours, theirs, strict=True)]
        report["held_out"] = {
            "where": where,
            "images": len(images),
            "psnr_vs_teacher": sum(psnr) / len(psnr),
            "ssim_vs_teacher": sum(similarity) / len(similarity),
        }
    demo_root = run_dir / "demo_data"
    if cfg.data.data is None and demo_root.is_dir():  # the built-in demo: the true map f is known
        (t_db, base), (s_db, _) = (demo.evaluate(nets[k], demo_root, device) for k in ("teacher", "student"))
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
    if "demo_psnr_vs_f" in r:
        d = r["demo_psnr_vs_f"]
        lines.append(
            f"PSNR vs the demo's true map f(a) on its held-out tiles: teacher {d['teacher']:.2f} dB, "
            f"student {d['student']:.2f} dB (untranslated a: {d['untranslated']:.2f} dB)"
        )
    return "\n".join(lines)
