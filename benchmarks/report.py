"""Render and check the performance record (benchmarks/results/*.json, schema 1 in benchmarks/results.py).

    python -m benchmarks.report table [FILE ...] [--readme README.md] [--chart OUT.png]
    python -m benchmarks.report compare BASELINE NEW [--threshold 0.10]

`table` prints one Markdown table per results file; with no FILE it takes the newest file (by its
`created` field) for each GPU kind in benchmarks/results/. `--readme` rewrites the text between the
`<!-- perf-table:start -->` and `<!-- perf-table:end -->` lines; `--chart` draws the training-step
cases' pairs/s as a PNG (matplotlib: bars grouped per GPU, each labelled with its speed-up over the
reference). `compare` matches cases by (file, name) and exits 1 when one got slower than the threshold
allows; throughput is only compared on the same GPU kind.

Exit status: 0 fine, 1 a regression (compare), 2 a usage or input error (one `report: error:` line).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from benchmarks.results import RESULTS_DIR, THROUGHPUT_KEYS, gpu_slug, load_results
from fastcycle.atomic import write_atomic

START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
UNITS = {"pairs_per_s": "pairs/s", "images_per_s": "images/s", "loader_images_per_s": "images/s"}
TRAIN_FILE = "bench_train_step.py"


class ReportError(Exception):
    """A problem the user can fix (a missing or malformed file, a missing marker): one line, exit 2."""


# ---- loading -------------------------------------------------------------------------------------


def _number_or_none(value) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def load(path: str | Path) -> dict:
    """A results file, checked far enough that rendering it cannot fail; ReportError otherwise."""
    try:
        record = load_results(path)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text file") from None
    except ValueError as e:  # json.JSONDecodeError, or load_results' schema check (it names the path)
        msg = str(e) if str(e).startswith(str(path)) else f"{path}: not valid JSON ({e})"
        raise ReportError(msg) from None
    except AttributeError:  # valid JSON but not an object
        raise ReportError(f"{path}: not a results file (expected a JSON object)") from None

    def bad(what: str) -> ReportError:
        return ReportError(f"{path}: not a schema-1 results file ({what})")

    env = record.get("env")
    if not isinstance(env, dict) or not isinstance(env.get("gpu"), str):
        raise bad("env.gpu missing")
    if not isinstance(record.get("created"), str):
        raise bad("created missing")
    cases = record.get("cases")
    if not isinstance(cases, list):
        raise bad("cases is not a list")
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or not all(isinstance(case.get(k), str) for k in ("name", "file")):
            raise bad(f"cases[{i}] has no name or file")
        for key in (*THROUGHPUT_KEYS, "mfu", "peak_memory_bytes"):
            if not _number_or_none(case.get(key)):
                raise bad(f"cases[{i}].{key} is not a number")
        for key in ("params", "extra"):
            if not isinstance(case.get(key, {}), dict):
                raise bad(f"cases[{i}].{key} is not an object")
    return record


def newest_per_gpu(directory: Path) -> list[Path]:
    """The newest file (by `created`) for each GPU kind in `directory`, ordered by GPU name."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise ReportError(f"no results files in {directory}; run `pytest benchmarks/` on a GPU first")
    newest: dict[str, tuple[str, Path]] = {}
    for path in files:
        record = load(path)
        kind = gpu_slug(record["env"]["gpu"])
        # created is "%Y-%m-%dT%H:%M:%SZ" (UTC), so string order is time order
        if kind not in newest or record["created"] > newest[kind][0]:
            newest[kind] = (record["created"], path)
    return [newest[kind][1] for kind in sorted(newest)]


# ---- one case ------------------------------------------------------------------------------------


def throughput(case: dict) -> tuple[str, float] | None:
    """(key, value) of the case's throughput, or None for cases that record none (e.g. kernels)."""
    for key in THROUGHPUT_KEYS:
        if case.get(key) is not None:
            return key, float(case[key])
    return None


def _is_reference(case: dict) -> bool:
    # The harness stringifies non-scalar params (bench_train_step.py parametrizes `case` with a tuple),
    # while extra_info holds the plain case name and batch: accept either place.
    params, extra = case.get("params") or {}, case.get("extra") or {}
    named = params.get("case") == "reference" or extra.get("case") == "reference"
    batch = params["batch"] if "batch" in params else extra.get("batch")
    return named and batch in (1, "1")


def _test(case: dict) -> tuple[str, str]:
    """(file, test function): "test_family_step[dcgan_b128]" is another model than test_train_step's."""
    return case["file"], case["name"].split("[", 1)[0]


def speedups(record: dict) -> dict[int, float]:
    """index of case -> its throughput over the reference case (case "reference", batch 1) of its test."""
    reference: dict[tuple[str, str], tuple[str, float]] = {}
    for case in record["cases"]:
        tp = throughput(case)
        if tp and tp[1] > 0 and _test(case) not in reference and _is_reference(case):
            reference[_test(case)] = tp
    out = {}
    for i, case in enumerate(record["cases"]):
        tp, ref = throughput(case), reference.get(_test(case))
        if tp and ref and tp[0] == ref[0]:
            out[i] = tp[1] / ref[1]
    return out


def fmt_rate(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# ---- table ---------------------------------------------------------------------------------------


def heading(record: dict) -> str:
    env = record["env"]
    sha = record.get("git_sha") or env.get("git_sha") or "unknown"
    text = f"{env['gpu']}, {record['created'][:10]}, git {sha}, torch {env.get('torch', 'unknown')}"
    if record.get("budget_s") is not None:  # a budgeted run: say what it left out
        text += f", --budget {record['budget_s']:g} s ({len(record.get('skipped') or [])} cases skipped)"
    return text + (", PARTIAL: the run did not finish" if record.get("partial") else "")


def table(record: dict) -> str:
    lines = [
        f"**{_cell(heading(record))}**",
        "",
        "| benchmark | case | throughput | MFU | peak memory | vs reference |",
        "|---|---|--:|--:|--:|--:|",
    ]
    ups = speedups(record)
    for i, case in enumerate(record["cases"]):
        tp = throughput(case)
        rate = f"{fmt_rate(tp[1])} {UNITS[tp[0]]}" if tp else "-"
        mfu = f"{100 * case['mfu']:.1f}%" if case.get("mfu") is not None else "-"
        peak = case.get("peak_memory_bytes")
        memory = f"{peak / 2**30:.2f} GiB" if peak is not None else "-"
        up = f"{ups[i]:.1f}x" if i in ups else "-"
        cells = [case["file"], case["name"], rate, mfu, memory, up]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def replace_between_markers(text: str, body: str, name: str, start: str = START, end: str = END) -> str:
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == start]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ReportError(
            f"{name}: needs one line {start} and, after it, one line {end}; add them where the table goes"
        )
    s, e = starts[0], ends[0]
    return "".join(lines[: s + 1]) + "\n" + body + "\n\n" + "".join(lines[e:])


# ---- chart ---------------------------------------------------------------------------------------


def _label(name: str) -> str:
    m = re.fullmatch(r"\w+\[(.*)\]", name)  # "test_train_step[bf16]" -> "bf16"
    return m.group(1) if m else name


REFERENCE_COLOR = "#999999"
CASE_COLORS = ("#3b6ea8", "#e08a2c", "#4a9c5d", "#c0504d", "#8064a2", "#4bacc6", "#9b7b4f", "#d66fb0")


def chart(records: list[dict]):
    """Grouped horizontal bars of pairs/s: one group (panel) per results file, i.e. per GPU, one bar per
    training-step case, each labelled with its rate and its speed-up over that GPU's reference step
    (grey, and a dashed line across the panel). A case keeps its colour in every group. Returns a
    matplotlib Figure (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = []
    for record in records:
        ups = speedups(record)
        bars = [
            (_label(c["name"]), c["pairs_per_s"], _is_reference(c), ups.get(i))
            for i, c in enumerate(record["cases"])
            if c["file"] == TRAIN_FILE and c.get("pairs_per_s") is not None
        ]
        if bars:
            groups.append((heading(record), bars))
    if not groups:
        raise ReportError(f"no {TRAIN_FILE} cases with pairs_per_s to chart")
    labels = list(dict.fromkeys(label for _, bars in groups for label, _, ref, _ in bars if not ref))
    colours = {label: CASE_COLORS[i % len(CASE_COLORS)] for i, label in enumerate(labels)}
    top = max(v for _, bars in groups for _, v, _, _ in bars) or 1.0

    heights = [0.9 + 0.32 * len(bars) for _, bars in groups]
    fig = Figure(figsize=(10, 0.5 + sum(heights)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (head, bars) in zip(axes, groups, strict=True):
        y = list(range(len(bars)))[::-1]  # the first case on top
        values = [v for _, v, _, _ in bars]
        fill = [REFERENCE_COLOR if ref else colours[label] for label, _, ref, _ in bars]
        ax.barh(y, values, color=fill, height=0.7)
        for yi, (_, v, ref, up) in zip(y, bars, strict=True):
            text = f"{fmt_rate(v)} pairs/s" + (" (reference)" if ref else f" ({up:.1f}x)" if up else "")
            ax.text(v + top * 0.01, yi, text, va="center", fontsize=9)
            if ref:
                ax.axvline(v, color=REFERENCE_COLOR, linestyle="--", linewidth=1)
        ax.set_yticks(y, [label for label, *_ in bars])
        ax.set_title(head, loc="left", fontsize=10)
        ax.grid(True, axis="x", color="#e6e6e6")
        ax.set_axisbelow(True)
    axes[0].set_xlim(0, top * 1.3)  # room for the labels right of the longest bar
    axes[-1].set_xlabel("training step throughput, pairs/s (higher is better; Nx: speed-up over reference)")
    return fig


# ---- compare -------------------------------------------------------------------------------------


def compare(baseline: dict, new: dict, threshold: float, names: tuple[str, str]) -> tuple[str, int]:
    """(report text, number of regressions): cases slower by more than `threshold` (a fraction)."""
    gpus = baseline["env"]["gpu"], new["env"]["gpu"]
    if gpu_slug(gpus[0]) != gpu_slug(gpus[1]):
        raise ReportError(
            f"{names[0]} ran on {gpus[0]}, {names[1]} on {gpus[1]}: "
            "throughput is only comparable on the same GPU kind"
        )
    old = {(c["file"], c["name"]): c for c in baseline["cases"]}
    cur = {(c["file"], c["name"]): c for c in new["cases"]}
    lines = [
        f"baseline: {names[0]} ({heading(baseline)})",
        f"new:      {names[1]} ({heading(new)})",
        "",
        "| benchmark | case | baseline | new | change | |",
        "|---|---|--:|--:|--:|---|",
    ]
    regressions = 0
    for key in (k for k in old if k in cur):
        a, b = throughput(old[key]), throughput(cur[key])
        if not a or not b or a[0] != b[0]:
            continue
        unit = UNITS[a[0]]
        change, flag = "-", ""
        if a[1] > 0:
            ratio = b[1] / a[1]
            change = f"{100 * (ratio - 1):+.1f}%"
            if ratio < 1 - threshold:
                flag, regressions = "REGRESSION", regressions + 1
        cells = [*key, f"{fmt_rate(a[1])} {unit}", f"{fmt_rate(b[1])} {unit}", change, flag]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    added = [k for k in cur if k not in old]
    removed = [k for k in old if k not in cur]
    for title, keys in (("added (only in new)", added), ("removed (only in baseline)", removed)):
        if keys:
            lines += ["", f"{title}:", *(f"  {file}::{name}" for file, name in keys)]
    lines.append("")
    if regressions:
        lines.append(f"{regressions} REGRESSION(S): slower by more than {100 * threshold:g}%")
    else:
        lines.append(f"no regressions (threshold {100 * threshold:g}%)")
    return "\n".join(lines), regressions


# ---- command line --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other error of this command
        self.exit(2, f"report: error: {message} (see python -m benchmarks.report --help)\n")


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1), e.g. 0.10 for 10%")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="Markdown tables of results files")
    t.add_argument(
        "files", nargs="*", metavar="FILE", help="default: newest per GPU kind in benchmarks/results/"
    )
    t.add_argument("--readme", metavar="PATH", help=f"replace the text between {START} and {END}")
    t.add_argument("--chart", metavar="PATH", help="write a PNG bar chart of the training-step cases")
    c = sub.add_parser("compare", help="flag cases that got slower; exit 1 if any")
    c.add_argument("baseline", metavar="BASELINE")
    c.add_argument("new", metavar="NEW")
    c.add_argument("--threshold", type=_threshold, default=0.10, help="allowed slow-down (default 0.10)")
    return parser


def _table(args) -> int:
    paths = args.files or newest_per_gpu(RESULTS_DIR)
    records = [load(p) for p in paths]
    body = "\n\n".join(table(r) for r in records)
    # everything that can fail is checked before anything is written
    readme = None
    if args.readme:
        path = Path(args.readme)
        try:
            old = path.read_text()
        except OSError as e:
            raise ReportError(f"{path}: cannot read ({e.strerror or e})") from None
        readme = (path, replace_between_markers(old, body, str(path)))
    figure = chart(records) if args.chart else None
    print(body)
    if readme:
        write_atomic(readme[0], lambda tmp: tmp.write_text(readme[1]))
    if figure is not None:
        write_atomic(Path(args.chart), lambda tmp: figure.savefig(tmp, format="png"))
    return 0


def _compare(args) -> int:
    text, regressions = compare(
        load(args.baseline), load(args.new), args.threshold, (args.baseline, args.new)
    )
    print(text)
    return 1 if regressions else 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed: a status, not an exception
        return e.code if isinstance(e.code, int) else 0
    try:
        return _table(args) if args.command == "table" else _compare(args)
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing the README or the chart
        print(f"report: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
