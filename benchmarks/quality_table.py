"""Render the quality record (benchmarks/results/quality/*.json, written by benchmarks.quality_options).

    python -m benchmarks.quality_table [FILE ...] [--readme README.md]

Prints one Markdown table per file; with no FILE, the newest file (by its `created` field) per device
in benchmarks/results/quality/. `--readme` rewrites the text between the `<!-- quality-table:start -->`
and `<!-- quality-table:end -->` lines, so the README's table is always a rendering of a committed
file (tests/test_quality_options.py checks that it is). Every delta is against eager fp32's row.

Exit status: 0 fine, 2 a usage or input error (one `quality_table: error:` line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.quality_options import QUALITY_DIR, SCHEMA
from benchmarks.report import ReportError, replace_between_markers
from fastcycle.atomic import write_atomic

START, END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"
# What the table reads from a record and from each of its options: checked before anything renders.
RECORD_KEYS = ("created", "git_sha", "device_name", "env", "runs", "seed", "tiles", "command", "options")
RECORD_KEYS += ("untranslated",)
OPTION_KEYS = ("key", "label", "how", "psnr_vs_f_db", "fid", "kid")
OPTION_KEYS += ("psnr_vs_eager_db", "max_diff_vs_eager", "values_differing", "values")


def load(path: str | Path) -> dict:
    """A quality record, checked far enough that rendering it cannot fail; ReportError otherwise."""
    try:
        record = json.loads(Path(path).read_text())
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ReportError(f"{path}: not a {SCHEMA} record (written by python -m benchmarks.quality_options)")
    if missing := [k for k in RECORD_KEYS if k not in record]:
        raise ReportError(f"{path}: a {SCHEMA} record without {missing[0]}")
    rows = record["options"]
    if not isinstance(rows, list) or not rows or rows[0].get("key") != "eager":
        raise ReportError(f"{path}: its options do not start with eager fp32, the baseline")
    for row in rows:
        if missing := [k for k in OPTION_KEYS if k not in row]:
            raise ReportError(f"{path}: option {row.get('key', '?')} has no {missing[0]}")
    return record


def newest_per_device(directory: Path) -> list[Path]:
    """The newest file (by `created`) for each device_name in `directory`, ordered by device name."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in sorted(directory.glob("*.json")):
        record = load(path)
        kind = record["device_name"]
        # created is "%Y-%m-%dT%H:%M:%SZ" (UTC), so string order is time order
        if kind not in newest or record["created"] > newest[kind][0]:
            newest[kind] = (record["created"], path)
    if not newest:
        raise ReportError(f"no quality records in {directory}; run python -m benchmarks.quality_options")
    return [newest[kind][1] for kind in sorted(newest)]


def _delta(value: float, base: float, digits: int) -> str:
    delta = f"{value - base:+.{digits}f}"
    return f"{value:.{digits}f} ({'0' if float(delta) == 0 else delta})"  # not +0.00 and -0.00


def _vs_eager(row: dict) -> str:
    """How far the option's pixels are from eager fp32's: identical, or how many of the 8-bit values
    differ, by how many levels at most, and the PSNR between the two."""
    if row["max_diff_vs_eager"] is None:
        return "-"
    if row["max_diff_vs_eager"] == 0:
        return "identical"
    n, total = row["values_differing"], row["values"]
    share = f"{n:,} of {total:,}" if n < total / 1000 else f"{100 * n / total:.1f}% of the"
    return f"{share} values differ, by <= {row['max_diff_vs_eager']} (PSNR {row['psnr_vs_eager_db']:.1f} dB)"


def heading(record: dict) -> str:
    env, runs = record["env"], record["runs"]
    d, s = runs["demo"], runs["student"]
    return (
        f"{record['device_name']} ({env.get('threads', '?')} threads), {record['created'][:10]}, git "
        f"{record['git_sha']}, torch {env.get('torch', 'unknown')}: the demo ({d['netG']} ngf {d['ngf']}, "
        f"{d['norm']} norm, {d['steps']} steps, seed {record['seed']}) on its {record['tiles']} held-out "
        f"tiles; student {s['netG']} ngf {s['ngf']}, {s['steps']} steps"
    )


def table(record: dict) -> str:
    base = record["options"][0]
    lines = [
        f"**{heading(record)}**",
        "",
        "| option | how | PSNR vs f(a), dB | FID vs testB | KID vs testB, x 1e-3 | pixels vs eager fp32 |",
        "|---|---|--:|--:|--:|---|",
    ]
    rows = [
        *record["options"],
        {"label": "untranslated testA", "how": "doing nothing", **record["untranslated"]},
    ]
    for row in rows:
        is_base = row is base
        cells = [
            row["label"] + (" (baseline)" if is_base else ""),
            row["how"],
            f"{row['psnr_vs_f_db']:.2f}" if is_base else _delta(row["psnr_vs_f_db"], base["psnr_vs_f_db"], 2),
            f"{row['fid']:.2f}" if is_base else _delta(row["fid"], base["fid"], 2),
            f"{row['kid'] * 1e3:.2f}" if is_base else _delta(row["kid"] * 1e3, base["kid"] * 1e3, 2),
            _vs_eager(row) if "max_diff_vs_eager" in row else "-",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", f"Measured by `{record['command']}`."]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other error of this command
        self.exit(2, f"quality_table: error: {message} (see python -m benchmarks.quality_table --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m benchmarks.quality_table", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "files", nargs="*", metavar="FILE", help=f"default: the newest per device in {QUALITY_DIR}"
    )
    p.add_argument("--readme", metavar="PATH", help=f"replace the text between {START} and {END}")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else 0
    try:
        body = "\n\n".join(table(load(f)) for f in args.files or newest_per_device(QUALITY_DIR))
        if args.readme:
            path = Path(args.readme)
            try:
                text = replace_between_markers(path.read_text(), body, str(path), START, END)
            except OSError as e:
                raise ReportError(f"{path}: cannot read ({e.strerror or e})") from None
            write_atomic(path, lambda tmp: tmp.write_text(text))
    except ReportError as e:
        print(f"quality_table: error: {e}", file=sys.stderr)
        return 2
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
