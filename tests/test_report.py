"""`python -m benchmarks.report`: tables, README markers, chart, and the regression check, on small
schema-1 files written here (the numbers are chosen so every expected cell can be worked out by hand)."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import report

GiB = 2**30
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"


def case(file, name, params, **fields):
    record = {
        "name": name,
        "file": file,
        "params": params,
        "timings_s": {"median": 0.1, "p10": 0.09, "p90": 0.11, "rounds": 10},
        "mfu": None,
        "peak_memory_bytes": None,
        "extra": {},
    }
    return record | fields


def train(name, batch, pairs_per_s, mfu, peak):
    params = {"case": name, "batch": batch}
    return case(
        "bench_train_step.py",
        f"test_train_step[{name}]",
        params,
        pairs_per_s=pairs_per_s,
        mfu=mfu,
        peak_memory_bytes=peak,
    )


def results_file(gpu=H100, created="2026-11-23T21:05:00Z", sha="1a2b3c4", cases=None):
    return {
        "schema": 1,
        "created": created,
        "git_sha": sha,
        "env": {"gpu": gpu, "torch": "2.11.0", "cuda": "12.8", "git_sha": sha},
        "cases": cases
        if cases is not None
        else [
            train("reference", 1, 10.0, 0.05, 2 * GiB),
            train("bf16", 1, 32.0, 0.16, 1.5 * GiB),
            train("best-b8", 8, 250.0, 0.6, 12 * GiB),
            case(
                "bench_infer.py",
                "test_infer[1-eager]",
                {"provider": "eager", "batch": 1},
                images_per_s=1234.4,
            ),
            case(
                "bench_loaders.py",
                "test_loader[torch-4]",
                {"name": "torch", "workers": 4},
                loader_images_per_s=812.0,
            ),
            case("bench_kernels.py", "test_norm[in-256]", {"case": "in-256"}),  # records GB/s, no throughput
        ],
    }


def write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record))
    return path


def rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by case name: the cells after it."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and cells[1] not in ("case", "---"):
            out[cells[1]] = cells[2:]
    return out


def run(capsys, *argv):
    status = report.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_table_cells(tmp_path, capsys):
    status, out, err = run(capsys, "table", write(tmp_path / "h100.json", results_file()))
    assert (status, err) == (0, "")
    assert f"{H100}, 2026-11-23, git 1a2b3c4, torch 2.11.0" in out
    r = rows(out)
    # throughput, MFU, peak memory, vs reference
    assert r["test_train_step[reference]"] == ["10.0 pairs/s", "5.0%", "2.00 GiB", "1.0x"]
    assert r["test_train_step[bf16]"] == ["32.0 pairs/s", "16.0%", "1.50 GiB", "3.2x"]
    assert r["test_train_step[best-b8]"] == ["250 pairs/s", "60.0%", "12.00 GiB", "25.0x"]
    # another file than the reference's: no speed-up; null MFU and memory show as "-"
    assert r["test_infer[1-eager]"] == ["1,234 images/s", "-", "-", "-"]
    assert r["test_loader[torch-4]"] == ["812 images/s", "-", "-", "-"]
    assert r["test_norm[in-256]"] == ["-", "-", "-", "-"]


def test_heading_says_budget_skips_and_partial(tmp_path, capsys):
    record = results_file() | {"budget_s": 420.0, "skipped": [{"name": "x", "file": "y", "reason": "z"}]}
    out = run(capsys, "table", write(tmp_path / "b.json", record | {"partial": True}))[1]
    assert "torch 2.11.0, --budget 420 s (1 cases skipped), PARTIAL: the run did not finish**" in out
    out = run(capsys, "table", write(tmp_path / "c.json", record | {"partial": False}))[1]
    assert "torch 2.11.0, --budget 420 s (1 cases skipped)**" in out


def test_reference_as_the_harness_records_it(tmp_path, capsys):
    # results.case_record stringifies tuple params; the plain case name and batch are in extra
    ref = train("reference", 1, 4.0, 0.02, None)
    ref["params"] = {"case": "('reference', 1, False, False, None, 'torch')"}
    ref["extra"] = {"case": "reference", "batch": 1}
    other = train("compile", 1, 10.0, 0.05, None)
    other["params"] = {"case": "('compile', 1, True, True, 'default', 'torch')"}
    not_batch_1 = train("reference", 4, 100.0, 0.5, None)  # a reference at batch 4 is not the baseline
    not_batch_1["name"] = "test_train_step[reference-b4]"
    family = case("bench_train_step.py", "test_family_step[dcgan_b128]", {}, images_per_s=5.0)
    family2 = case("bench_train_step.py", "test_family_step[pix2pix_b1]", {}, pairs_per_s=8.0)
    path = write(tmp_path / "a.json", results_file(cases=[not_batch_1, ref, other, family, family2]))
    r = rows(run(capsys, "table", path)[1])
    assert r["test_train_step[compile]"][-1] == "2.5x"
    assert r["test_train_step[reference-b4]"][-1] == "25.0x"
    # Other model families in the same file are not speed-ups of the CycleGAN reference step.
    assert r["test_family_step[dcgan_b128]"][-1] == r["test_family_step[pix2pix_b1]"][-1] == "-"


def test_newest_file_per_gpu(tmp_path, capsys, monkeypatch):
    # file names sort the other way round from `created`: selection must read the field
    write(tmp_path / "h100-a.json", results_file(created="2026-11-23T21:05:00Z", sha="newh100"))
    write(tmp_path / "h100-z.json", results_file(created="2026-11-20T08:00:00Z", sha="oldh100"))
    write(tmp_path / "a100.json", results_file(gpu=A100, created="2026-10-01T12:00:00Z", sha="a100sha"))
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    status, out, _ = run(capsys, "table")
    assert status == 0
    assert "git newh100" in out and "git a100sha" in out and "oldh100" not in out
    assert out.count("| benchmark | case |") == 2

    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "empty")
    status, _, err = run(capsys, "table")
    assert status == 2 and err.startswith("report: error: no results files")


def test_readme_markers(tmp_path, capsys):
    path = write(tmp_path / "h100.json", results_file())
    readme = tmp_path / "README.md"
    before, after = "# fastcycle\n\nintro\n", "\n## Next section\n"
    readme.write_text(f"{before}<!-- perf-table:start -->\nold table\n<!-- perf-table:end -->\n{after}")
    assert run(capsys, "table", path, "--readme", readme)[0] == 0
    text = readme.read_text()
    assert text.startswith(before + "<!-- perf-table:start -->\n") and text.endswith(
        "<!-- perf-table:end -->\n" + after
    )
    assert "old table" not in text and "| test_train_step[bf16] |" in text
    assert run(capsys, "table", path, "--readme", readme)[0] == 0
    assert readme.read_text() == text  # idempotent
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed, not left behind


@pytest.mark.parametrize(
    "content",
    [
        "no markers\n",
        "<!-- perf-table:start -->\nno end\n",
        "<!-- perf-table:end -->\n<!-- perf-table:start -->\n",
    ],
)
def test_readme_missing_marker(tmp_path, capsys, content):
    path = write(tmp_path / "h100.json", results_file())
    readme = tmp_path / "README.md"
    readme.write_text(content)
    status, out, err = run(capsys, "table", path, "--readme", readme)
    assert status == 2 and out == ""  # nothing printed or written when the command fails
    assert err.startswith("report: error:") and "perf-table:start" in err and err.count("\n") == 1
    assert readme.read_text() == content


def test_chart(tmp_path, capsys):
    path = write(tmp_path / "h100.json", results_file())
    png = tmp_path / "chart.png"
    assert (
        run(capsys, "table", path, write(tmp_path / "a100.json", results_file(gpu=A100)), "--chart", png)[0]
        == 0
    )
    with Image.open(png) as img:
        # report.chart's figsize at its 100 dpi: 10 inches wide, 0.5 + (0.9 + 0.32 per bar) per panel
        # high, two panels (one per file) of three training-step bars each.
        assert img.format == "PNG" and img.size == (10 * 100, round((0.5 + 2 * (0.9 + 0.32 * 3)) * 100))
        colors = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
    assert (0x3B, 0x6E, 0xA8) in colors and (0x99, 0x99, 0x99) in colors  # bars and the reference bar
    assert not list(tmp_path.glob(".*.tmp"))

    no_train = write(tmp_path / "infer.json", results_file(cases=results_file()["cases"][3:]))
    status, _, err = run(capsys, "table", no_train, "--chart", tmp_path / "none.png")
    assert status == 2 and "bench_train_step.py" in err and not (tmp_path / "none.png").exists()


def slower(record, factor, name="test_train_step[bf16]"):
    new = copy.deepcopy(record)
    for c in new["cases"]:
        if c["name"] == name:
            c["pairs_per_s"] *= factor
    return new


def test_compare_within_threshold(tmp_path, capsys):
    base = results_file()
    new = slower(slower(base, 0.95), 1.5, "test_train_step[best-b8]")
    status, out, _ = run(capsys, "compare", write(tmp_path / "b.json", base), write(tmp_path / "n.json", new))
    assert status == 0
    r = rows(out)
    assert r["test_train_step[bf16]"] == ["32.0 pairs/s", "30.4 pairs/s", "-5.0%", ""]
    assert r["test_train_step[best-b8]"] == ["250 pairs/s", "375 pairs/s", "+50.0%", ""]
    assert "test_norm[in-256]" not in r  # no throughput: nothing to compare
    assert "REGRESSION" not in out


def test_compare_regression_added_removed(tmp_path, capsys):
    base = results_file()
    new = slower(base, 0.85)
    new["cases"] = [c for c in new["cases"] if c["file"] != "bench_loaders.py"]
    new["cases"].append(train("cudagraphs", 1, 60.0, 0.3, None))
    status, out, _ = run(capsys, "compare", write(tmp_path / "b.json", base), write(tmp_path / "n.json", new))
    assert status == 1
    r = rows(out)
    assert r["test_train_step[bf16]"] == ["32.0 pairs/s", "27.2 pairs/s", "-15.0%", "REGRESSION"]
    assert r["test_train_step[reference]"][-1] == ""
    assert "added (only in new):\n  bench_train_step.py::test_train_step[cudagraphs]" in out
    assert "removed (only in baseline):\n  bench_loaders.py::test_loader[torch-4]" in out
    assert "test_train_step[cudagraphs]" not in r and "test_loader[torch-4]" not in r
    # a wider threshold lets the same 15% through
    argv = ("compare", tmp_path / "b.json", tmp_path / "n.json", "--threshold", "0.2")
    assert run(capsys, *argv)[0] == 0


def test_compare_refuses_different_gpus(tmp_path, capsys):
    a = write(tmp_path / "h100.json", results_file())
    b = write(tmp_path / "a100.json", results_file(gpu=A100))
    status, out, err = run(capsys, "compare", a, b)
    assert status == 2 and out == ""
    assert err.startswith("report: error:") and "only comparable on the same GPU kind" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        (json.dumps(results_file() | {"schema": 2}), "schema 2"),
        (json.dumps([1, 2]), "not a results file"),
        (json.dumps({k: v for k, v in results_file().items() if k != "env"}), "env.gpu"),
        (
            json.dumps(results_file(cases=[{"name": "x", "file": "f.py", "pairs_per_s": "fast"}])),
            "pairs_per_s",
        ),
    ],
)
def test_bad_files(tmp_path, capsys, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    for argv in (("table", path), ("compare", path, path)):
        status, out, err = run(capsys, *argv)
        assert (status, out) == (2, "")
        assert err.startswith(f"report: error: {path}") and message in err and err.count("\n") == 1


def test_usage_error_is_one_line(capsys):
    status, _, err = run(capsys, "compare", "a.json", "b.json", "--threshold", "10")
    assert status == 2 and err.startswith("report: error:") and err.count("\n") == 1


def test_python_dash_m(tmp_path):
    """The command as a user types it, from the repository root; errors without a traceback."""
    root = Path(__file__).resolve().parents[1]
    base = write(tmp_path / "b.json", results_file())
    new = write(tmp_path / "n.json", slower(results_file(), 0.5))
    cmd = [sys.executable, "-m", "benchmarks.report", "compare", str(base), str(new)]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "REGRESSION" in done.stdout
    cmd[-1] = str(tmp_path / "missing.json")
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("report: error:")
