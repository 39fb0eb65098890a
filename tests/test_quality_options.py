"""benchmarks/quality_options.py at a tiny size (every option's code path, in this process), and the
README's quality table: a rendering of the committed record, which only quality_table.py writes."""

import math
from pathlib import Path

import pytest
import torch

from benchmarks import quality_options, quality_table
from benchmarks.report import replace_between_markers

ROOT = Path(__file__).resolve().parents[1]


def test_every_option_runs_at_a_tiny_size(tmp_path):
    """The demo at ngf 4 and its student, 2 steps each, every option over 2 held-out tiles (about 20
    Inception passes); compile with Dynamo's eager backend (Inductor's C++: tests/test_compile.py)."""
    argv = ["--device", "cpu", "--ngf", "4", "--max-steps", "2", "--tiles", "2", "--compile-backend", "eager"]
    out = quality_options.main([*argv, "--out", str(tmp_path / "q.json"), "--work", str(tmp_path / "w")])
    record = quality_table.load(out)
    rows = {row["key"]: row for row in record["options"]}
    assert list(rows) == list(quality_options.OPTIONS) and record["tiles"] == 2
    for row in [*rows.values(), record["untranslated"]]:
        assert math.isfinite(row["psnr_vs_f_db"]) and math.isfinite(row["fid"]), row
        assert (row["n_fake"], row["n_real"]) == (2, 2)
    assert record["runs"]["demo"]["steps"] == record["runs"]["student"]["steps"] == 2
    # Dynamo's eager backend runs the generator's own ops in the same order: the same pixels.
    assert rows["eager"]["max_diff_vs_eager"] == rows["compile"]["max_diff_vs_eager"] == 0
    if not torch.cuda.is_available():
        assert "Triton's CPU interpreter" in rows["triton"]["how"]
    assert "CPUExecutionProvider" in rows["onnx_fp16"]["how"]
    assert record["command"].startswith("python -m benchmarks.quality_options --device cpu --ngf 4")
    table = quality_table.table(record)
    rows_shown = [line for line in table.splitlines() if line.startswith("|")]
    assert len(rows_shown) == 2 + len(rows) + 1  # header, rule, each option, untranslated
    assert "| eager fp32 (baseline) |" in table and "| untranslated testA | doing nothing |" in table


def test_the_readme_table_renders_the_committed_record():
    """`python -m benchmarks.quality_table --readme README.md` would change nothing: the table is the
    newest committed record's, as rendered now."""
    files = quality_table.newest_per_device(quality_options.QUALITY_DIR)
    body = "\n\n".join(quality_table.table(quality_table.load(f)) for f in files)
    readme = (ROOT / "README.md").read_text()
    start, end = quality_table.START, quality_table.END
    assert replace_between_markers(readme, body, "README.md", start, end) == readme


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "speed.json").write_text('{"schema": 1}')  # the speed record's schema
    (tmp_path / "part.json").write_text('{"schema": "quality-1", "created": "2026-12-05T00:00:00Z"}')
    (tmp_path / "README.md").write_text("no markers\n")
    record = quality_table.newest_per_device(quality_options.QUALITY_DIR)[0]
    assert quality_table.main([str(tmp_path / "speed.json")]) == 2
    assert quality_table.main([str(tmp_path / "none.json")]) == 2
    assert quality_table.main([str(tmp_path / "part.json")]) == 2
    assert quality_table.main(["--readme", str(tmp_path / "README.md"), str(record)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("quality_table: error: ") for line in err)
    assert "not a quality-1 record" in err[0] and "none.json: cannot read" in err[1]
    assert "part.json: a quality-1 record without git_sha" in err[2]
    assert "needs one line <!-- quality-table:start -->" in err[3]
    assert (tmp_path / "README.md").read_text() == "no markers\n"
    with pytest.raises(SystemExit, match="quality_options: error: unknown option fast; choose from eager"):
        quality_options.main(["--options", "eager,fast"])
