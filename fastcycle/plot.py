"""Loss curves of a training run as a PNG, drawn with matplotlib (Agg: no display needed).

    from fastcycle.plot import plot_run
    plot_run("runs/horse2zebra")  # -> runs/horse2zebra/loss_curves.png

Reads `<run>/metrics.jsonl` (one JSON object per log line, see train/metrics.py). Every key other than
step/epoch/lr/pairs_per_s/mfu is a loss; losses are drawn in panels by kind (generator, discriminator,
reconstruction, classification, other) so that a cycle loss of 5 does not flatten a GAN loss of 0.3.
Each loss is a faint raw trace under its smoothed curve (a debiased exponential moving average, as
TensorBoard's smoothing shows), and a panel whose values span more than two decades gets a log axis.
A run trained with --eval-every adds a panel of each direction's FID on the held-out images (its
evaluation records, one point each, unsmoothed). The learning rate (as logged, unsmoothed) and the
throughput (pairs/s) follow in panels of their own, on the same step axis.
Lines that do not parse (the last one of a run killed mid-write) and non-finite values are skipped;
a non-finite value breaks the raw trace there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError

NOT_LOSSES = frozenset({"step", "epoch", "lr", "pairs_per_s", "mfu"})
PALETTE = (  # matplotlib's tab10: distinct colours, one per loss
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
LR_COLOR, SPEED_COLOR = "#444444", "#2b8cbe"
FID_COLORS = {"AtoB": "#d95f02", "BtoA": "#1b9e77"}  # ColorBrewer's Dark2: apart from the losses' tab10
GROUPS = ("generator", "discriminator", "reconstruction", "classification", "other")
RAW_ALPHA = 0.25  # the raw trace, faint under the smoothed curve


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


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key`; a non-finite value becomes NaN, which breaks the line there."""
    steps, values = [], []
    for row in rows:
        value = _number(row.get(key))
        if value is not None:
            steps.append(float(row["step"]))
            values.append(value if math.isfinite(value) else math.nan)
    return steps, values


def smoothing_weight(n: int) -> float:
    """The EMA weight for n points: a window of about n/20 points (0 below 20 points, at most 0.98)."""
    return min(max(1.0 - 20.0 / max(n, 1), 0.0), 0.98)


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: a debiased exponential moving average that steps over non-finite values
    (NaN where the value is one, so the curve shows the gap)."""
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        last, n = weight * last + (1 - weight) * v, n + 1
        out.append(last / (1 - weight**n) if weight else v)  # debiased: the first points are not pulled to 0
    return out


def _draw(ax, title: str, series: list[tuple[str, str, list[float], list[float]]], smoothed: bool) -> None:
    """One panel: each series raw (faint) under its smoothed curve, or raw alone (`smoothed` False: the
    learning rate, which is exact, and FID, whose points are few and each an evaluation), and a legend
    right of the panel with each series' last value.
    A panel of positive values spanning more than two decades gets a log axis."""
    finite = [v for *_, values in series for v in values if math.isfinite(v)]
    for name, colour, steps, values in series:
        curve = smooth(values, smoothing_weight(len(values))) if smoothed else values
        last = next((v for v in reversed(curve) if math.isfinite(v)), math.nan)
        if smoothed:
            ax.plot(steps, values, color=colour, alpha=RAW_ALPHA, linewidth=1.0)
        ax.plot(steps, curve, color=colour, linewidth=2.0, label=f"{name}  {last:.4g}")
        if len(steps) == 1 or name.startswith("FID"):  # one point: a dot, not a zero-length line
            ax.plot(steps, values, "o", color=colour, markersize=5)
    if smoothed and finite and min(finite) > 0 and max(finite) > 100 * min(finite):
        ax.set_yscale("log")  # e.g. a loss falling from 10 to 0.05: every decade readable
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)


def _fid_series(rows: list[dict]) -> list[tuple[str, str, list[float], list[float]]]:
    """Each direction's FID over the evaluation records ({"step", "eval": {"AtoB": {"fid", ...}}})."""
    fids = [{d: _number(q.get("fid")) for d, q in r["eval"].items() if isinstance(q, dict)} for r in rows]
    series = []
    for i, d in enumerate(sorted({d for f in fids for d in f})):
        points = [(float(r["step"]), f[d]) for r, f in zip(rows, fids, strict=True) if f.get(d) is not None]
        points = [(s, v if math.isfinite(v) else math.nan) for s, v in points]
        colour = FID_COLORS.get(d, PALETTE[i % len(PALETTE)])
        series.append((f"FID {d}", colour, [s for s, _ in points], [v for _, v in points]))
    return [s for s in series if any(math.isfinite(v) for v in s[3])]


def panels(rows: list[dict]) -> list[tuple[str, list, bool]]:
    """(title, series, smoothed) of each panel, in drawing order, from metrics.jsonl's rows."""
    evals = [r for r in rows if isinstance(r.get("eval"), dict)]
    rows = [r for r in rows if "eval" not in r]
    names = sorted(
        {k for row in rows for k, v in row.items() if k not in NOT_LOSSES and _number(v) is not None}
    )
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    out = []
    for group in GROUPS:
        series = [(n, colours[n], *_series(rows, n)) for n in names if group_of(n) == group]
        series = [s for s in series if any(math.isfinite(v) for v in s[3])]
        if series:
            out.append((group, series, True))
    if not out:
        return out
    if fid := _fid_series(evals):
        out.append(("FID, held-out images (lower is better)", fid, False))
    for key, title, colour in (("lr", "learning rate", LR_COLOR), ("pairs_per_s", "pairs/s", SPEED_COLOR)):
        steps, values = _series(rows, key)
        if any(math.isfinite(v) for v in values):
            out.append((title, [(key, colour, steps, values)], key != "lr"))
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the loss curves of the run in `run_dir` to a PNG (default `<run>/loss_curves.png`); its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder; pass the --out folder of a training run")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; train first, or point at a run folder")
    drawn = panels(read_metrics(path))
    if not drawn:
        raise UserError(
            f"{path} has no finite loss values yet; train until the first log line (--log_every steps)"
        )

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: seconds to import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 0.6 + 2.3 * len(drawn)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg renders to a PNG without a display
    axes = fig.subplots(len(drawn), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, series, smoothed) in zip(axes, drawn, strict=True):
        _draw(ax, title, series, smoothed)
    axes[-1].set_xlabel("step")
    steps = [s for _, series, _ in drawn for _, _, xs, _ in series for s in xs]
    fig.suptitle(f"{run_dir.resolve().name}: steps {min(steps):.0f} to {max(steps):.0f}", x=0.01, ha="left")
    out = Path(out) if out is not None else run_dir / "loss_curves.png"
    return write_atomic(out, lambda tmp: fig.savefig(tmp, format="png"))
