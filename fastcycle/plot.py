"""Loss curves of a training run as a PNG, drawn with PIL (no matplotlib).

    from fastcycle.plot import plot_run
    plot_run("runs/horse2zebra")  # -> runs/horse2zebra/loss_curves.png

Reads `<run>/metrics.jsonl` (one JSON object per log line, see train/loop.py). Every key other than
step/epoch/lr/pairs_per_s/mfu is a loss; losses are drawn in panels by kind (generator, discriminator,
reconstruction, classification, other) so that a cycle loss of 5 does not flatten a GAN loss of 0.3,
each panel with its own value axis and legend, and the learning rate in a small panel at the bottom.
Lines that do not parse (the last one of a run killed mid-write) and non-finite values are skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError

NOT_LOSSES = frozenset({"step", "epoch", "lr", "pairs_per_s", "mfu"})
# matplotlib's tab10: distinct, and exact colours in the PNG (PIL's lines are not antialiased)
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
LR_COLOR = "#444444"
GROUPS = ("generator", "discriminator", "reconstruction", "classification", "other")

WIDTH, LEFT, RIGHT, PANEL_H, LR_H, GAP = 1000, 80, 210, 220, 90, 58


def group_of(name: str) -> str:
    """The panel a loss is drawn in."""
    if name.startswith(("cycle", "idt")) or name.endswith("L1"):
        return "reconstruction"
    if "cls" in name:
        return "classification"
    if name.startswith("D"):
        return "discriminator"
    if name.startswith("G"):
        return "generator"
    return "other"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_metrics(path: Path) -> list[dict]:
    """The well-formed lines of a metrics.jsonl (each a dict with a numeric step), in step order."""
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by a killed run, or noise
            continue
        if isinstance(row, dict) and _number(row.get("step")) is not None:
            rows.append(row)
    rows.sort(key=lambda r: r["step"])
    return rows


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) pairs of `key`; a non-finite value becomes NaN, which breaks the line there."""
    out = []
    for row in rows:
        value = _number(row.get(key))
        if value is not None:
            out.append((float(row["step"]), value if math.isfinite(value) else math.nan))
    return out


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> tuple[float, float, list[float]]:
    """A "nice" axis over [lo, hi]: (axis low, axis high, tick values)."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        if integer:
            pad = max(pad, 1.0)
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [i * step for i in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


def _fmt_value(value: float, step: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or step < 1e-3:
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals, 6) % 1:  # 2.5, 0.25: one more digit
        decimals += 1
    return f"{value:.{decimals}f}"


def _fmt_step(value: float) -> str:
    value = round(value)
    if abs(value) >= 10000 and value % 1000 == 0:
        return f"{value // 1000}k"
    return str(value)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed bitmap font
        return ImageFont.load_default()


def _panel(draw, box, title, series, x_axis, font, small_font, show_step_label) -> None:
    """One panel: frame, grid, ticks, the curves and, right of it, the legend.

    series: (name, colour, [(step, value)]); x_axis: (low, high, ticks) of the shared step axis."""
    x0, y0, x1, y1 = box
    finite = [v for _, _, pts in series for _, v in pts if math.isfinite(v)]
    lo, hi = min(finite), max(finite)
    pad = 0.04 * (hi - lo)  # keep curves off the frame, but a non-negative axis does not go below 0
    y_lo, y_hi, y_ticks = _ticks(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad)
    x_lo, x_hi, x_ticks = x_axis
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0

    def px(step: float) -> float:
        return x0 + (step - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def py(value: float) -> float:
        return y1 - (value - y_lo) / (y_hi - y_lo) * (y1 - y0)

    draw.text((x0, y0 - 6), title, fill="black", font=font, anchor="ls")
    for v in y_ticks:
        y = py(v)
        draw.line([(x0, y), (x1, y)], fill="#e6e6e6")
        draw.line([(x0 - 4, y), (x0, y)], fill="black")
        draw.text((x0 - 7, y), _fmt_value(v, y_step), fill="black", font=small_font, anchor="rm")
    for s in x_ticks:
        x = px(s)
        draw.line([(x, y0), (x, y1)], fill="#e6e6e6")
        draw.line([(x, y1), (x, y1 + 4)], fill="black")
        draw.text((x, y1 + 7), _fmt_step(s), fill="black", font=small_font, anchor="mt")
    if show_step_label:
        draw.text(((x0 + x1) / 2, y1 + 24), "step", fill="black", font=font, anchor="mt")
    draw.rectangle(box, outline="black")

    for _, colour, pts in series:
        segment: list[tuple[float, float]] = []
        for s, v in [*pts, (math.nan, math.nan)]:  # a trailing NaN flushes the last segment
            if math.isfinite(v):
                segment.append((px(s), py(v)))
                continue
            if len(segment) > 1:
                draw.line(segment, fill=colour, width=2, joint="curve")
            elif segment:
                (x, y) = segment[0]
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            segment = []

    ly = y0 + 4
    for name, colour, pts in series:
        last = next((v for _, v in reversed(pts) if math.isfinite(v)), None)
        label = name if last is None else f"{name}  {last:.4g}"
        draw.rectangle([x1 + 12, ly + 4, x1 + 32, ly + 9], fill=colour)
        draw.text((x1 + 38, ly + 7), label, fill="black", font=small_font, anchor="lm")
        ly += 18


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the loss curves of the run in `run_dir` to a PNG (default `<run>/loss_curves.png`); its path."""
    from PIL import Image, ImageDraw

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder; pass the --out folder of a training run")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; train first, or point at a run folder")
    rows = read_metrics(path)

    names = sorted(
        {k for row in rows for k, v in row.items() if k not in NOT_LOSSES and _number(v) is not None}
    )
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    panels = []
    for group in GROUPS:
        series = [(n, colours[n], _series(rows, n)) for n in names if group_of(n) == group]
        series = [s for s in series if any(math.isfinite(v) for _, v in s[2])]
        if series:
            panels.append((group, series))
    if not panels:
        raise UserError(
            f"{path} has no finite loss values yet; train until the first log line (--log_every steps)"
        )
    lr = [s for s in _series(rows, "lr") if math.isfinite(s[1])]

    steps = [s for _, series in panels for _, _, pts in series for s, _ in pts] + [s for s, _ in lr]
    x_axis = _ticks(min(steps), max(steps), n=8, integer=True)

    font, small_font = _font(14), _font(12)
    top = 64
    height = top + len(panels) * (PANEL_H + GAP) + (LR_H + GAP if lr else 0) + 16
    img = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(img)
    first, last = _fmt_step(min(steps)), _fmt_step(max(steps))
    draw.text(
        (LEFT, 24), f"{run_dir.resolve().name}: losses, steps {first} to {last}", fill="black", font=_font(18)
    )

    y = top
    for i, (group, series) in enumerate(panels):
        box = (LEFT, y + 16, WIDTH - RIGHT, y + 16 + PANEL_H - 16)
        _panel(draw, box, group, series, x_axis, font, small_font, not lr and i == len(panels) - 1)
        y += PANEL_H + GAP
    if lr:
        box = (LEFT, y + 16, WIDTH - RIGHT, y + 16 + LR_H - 16)
        _panel(draw, box, "learning rate", [("lr", LR_COLOR, lr)], x_axis, font, small_font, True)

    out = Path(out) if out is not None else run_dir / "loss_curves.png"
    return write_atomic(out, lambda tmp: img.save(tmp, format="PNG"))
