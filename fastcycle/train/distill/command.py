"""`fastcycle distill`: the student's config from its teacher, training on the engine, the report."""

from __future__ import annotations

import os

from fastcycle.errors import UserError
from fastcycle.runtime import resolve_device
from fastcycle.train.distill.report import build_report, format_report
from fastcycle.train.distill.teacher import read_teacher, student_config
from fastcycle.train.loop import train


def run_distill(
    teacher: str | None, direction: str | None, report_run: str | None, report_size: int, overrides: dict
) -> list[str]:
    """Distil `teacher` (or, with report_run, only report on a finished student); the lines to print."""
    if report_size <= 0 or report_size % 4:
        raise UserError(f"--report-size {report_size} must be a positive multiple of 4")
    if report_run:
        if teacher:
            raise UserError("--report RUN compares the run with its own teacher; drop --teacher")
        device = resolve_device(overrides.get("device", "auto"))
        return [format_report(build_report(report_run, device, report_size, overrides.get("report_fid")))]
    if not teacher:
        raise UserError(
            "`fastcycle distill` needs --teacher RUN (a CycleGAN or pix2pix run), or --report RUN"
        )
    cfg = student_config(read_teacher(teacher), direction, overrides)
    result = train(cfg)
    if result.stopped_by or os.environ.get("RANK", "0") != "0":  # stopped early, or not torchrun's rank 0
        return []
    return [format_report(build_report(result.run_dir, resolve_device(cfg.runtime.device), report_size))]
