"""`fastcycle translate` under torchrun (2 gloo ranks on the CPU): the ranks together write what one
process writes, byte for byte; a killed run is finished by a re-run with --skip-existing; rank 0 alone
prints the summary; the share of every rank; the flags refused under torchrun."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastcycle
from fastcycle.atomic import remove_leftovers
from fastcycle.cli import main
from fastcycle.models import build_generator
from fastcycle.ranks import DistInfo, shard
from fastcycle.trained import architecture, save_generator
from fastcycle.translate import _share, translate_path
from tests.test_cli import _translate

ROOT = Path(__file__).resolve().parents[1]
# Mixed sizes (width, height), one not a multiple of the generator's 4: padded and cropped back.
SIZES = [(32, 32), (48, 40), (37, 45)]
# --batch-size 1 and one intra-op thread, in both the one-process run and the ranks: CPU convolutions
# split their sums by batch and by thread count, and an 8-bit output may then round the other way (seen:
# 1 level on a pixel or two with 2 threads against torchrun's 1), which is not what is tested here.
FAIR = ("--batch-size", "1", "--device", "cpu")
OLD = 1_000_000_000  # an mtime (2001) that a rewrite would replace


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny ngf 8 checkpoint, a folder of 10 images of mixed sizes, 2 of them in a subfolder)."""
    root = tmp_path_factory.mktemp("dist")
    torch.manual_seed(0)
    net = build_generator("resnet_6blocks", ngf=8, init_gain=0.2).eval()  # gain 0.2: outputs not saturated
    weights = root / "G.safetensors"
    save_generator(net, weights, architecture({"netG": "resnet_6blocks", "ngf": 8}), "AtoB")
    rng = np.random.default_rng(0)
    for i in range(10):
        w, h = SIZES[i % len(SIZES)]
        folder = root / "in" / ("sub" if i >= 8 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img_{i:03d}.png")
    return weights, root / "in"


@pytest.fixture(scope="module")
def single(inputs) -> Path:
    """The outputs of one process, the reference."""
    weights, src = inputs
    out = src.parent / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers (FAIR)
    try:
        assert main(_translate(weights, src, out, *FAIR)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _torchrun(weights: Path, src: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    # --standalone: a free port of its own, so that pytest-xdist's workers do not collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "fastcycle", *_translate(weights, src, out, *FAIR, *flags)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_ranks(inputs, single) -> tuple[Path, str]:
    """(the output folder, stdout) of 2 ranks translating the folder."""
    weights, src = inputs
    out = src.parent / "two_ranks"
    return out, _torchrun(weights, src, out).stdout


def test_two_ranks_write_what_one_process_writes(two_ranks, single):
    out, _ = two_ranks
    want = _files(single)
    assert len(want) == 10 and "sub/img_009.png" in want
    assert _files(out) == want  # the same names (none missing, no temporary left) and the same bytes


def test_rank_0_alone_prints_the_summary(two_ranks):
    _, stdout = two_ranks
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout  # rank 1 prints nothing
    rate = r"[0-9]+\.[0-9]/s"
    each = r"[0-9]+\.[0-9], [0-9]+\.[0-9]/s"
    pattern = rf"translated 10 images to \S+ on 2 ranks \({rate} in all, per rank {each}; torch eager on cpu"
    assert re.match(pattern, lines[0]), lines[0]
    assert lines[0].endswith("; skipped 0 unreadable")


def test_a_rerun_with_skip_existing_finishes_a_killed_run(inputs, single):
    """What a killed run leaves: whole outputs, a temporary file of a write cut short, missing outputs.
    The re-run translates only the missing ones, leaves the others as they were, removes the leftover."""
    weights, src = inputs
    out = src.parent / "killed"
    shutil.copytree(single, out)
    for name in ("img_004.png", "sub/img_009.png"):  # one in each rank's share (i % 2)
        (out / name).unlink()
    leftover = out / ".img_004.png.4242.140000000000.tmp"
    leftover.write_bytes(b"\x89PNG half an image")
    kept = [p for p in out.rglob("*.png")]
    for p in kept:
        os.utime(p, (OLD, OLD))
    stdout = _torchrun(weights, src, out, "--skip-existing").stdout
    assert _files(out) == _files(single)  # the leftover is gone, the missing ones are written
    assert len(kept) == 8 and all(p.stat().st_mtime == OLD for p in kept)  # not rewritten
    assert stdout.startswith("translated 2 images to ")
    assert stdout.rstrip().endswith("; skipped 0 unreadable, 8 already translated")


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_every_input_goes_to_one_rank(world_size):
    for n in (0, 1, 5, 10, 23):
        items = [f"f{i}" for i in range(n)]
        shares = [shard(items, DistInfo(rank, world_size)) for rank in range(world_size)]
        taken = [x for s in shares for x in s]
        assert sorted(taken) == sorted(items) and len(taken) == n  # none twice, none left out
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # and evenly
        assert all(s == items[r::world_size] for r, s in enumerate(shares))  # interleaved


def test_the_share_is_taken_before_looking_at_the_outputs(tmp_path):
    """Rank 0 may have written outputs before rank 1 lists them: rank 1's share stays the odd files."""
    src, out = tmp_path / "in", tmp_path / "out"
    inputs = [src / f"{i}.png" for i in range(6)]
    out.mkdir()
    for i in (0, 1, 2):
        (out / f"{i}.png").write_bytes(b"written")
    mine, existing = _share(inputs, src, out, DistInfo(1, 2, 1), skip_existing=True)
    assert [p.name for p in mine] == ["3.png", "5.png"] and existing == 1
    assert _share(inputs, src, out, DistInfo(1, 2, 1), skip_existing=False) == (inputs[1::2], 0)


def test_remove_leftovers_removes_only_those_of_its_targets(tmp_path):
    ours = tmp_path / ".a.png.12.34.tmp"
    others = [tmp_path / ".b.png.12.34.tmp", tmp_path / ".a.png.notes", tmp_path / "a.png.12.34.tmp"]
    for p in [ours, *others]:
        p.write_bytes(b"x")
    assert remove_leftovers([tmp_path / "a.png", tmp_path / "missing" / "c.png"]) == 1
    assert not ours.exists() and all(p.exists() for p in others)


def test_skip_existing_with_one_file(inputs, tmp_path):
    weights, src = inputs
    t = fastcycle.load_translator(weights, device="cpu", say=lambda line: None)
    assert translate_path(t, src / "img_000.png", tmp_path / "one", skip_existing=True).written == 1
    os.utime(tmp_path / "one.png", (OLD, OLD))  # .png added to a name without a suffix, as written
    report = translate_path(t, src / "img_000.png", tmp_path / "one", skip_existing=True)
    assert (report.written, report.existing) == (0, 1) and (tmp_path / "one.png").stat().st_mtime == OLD


TORCHRUN_RANK_1 = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}


@pytest.mark.parametrize(
    ("env", "one_file", "flags", "pattern"),
    [
        (TORCHRUN_RANK_1, False, ["--html"], "--html writes one results page"),
        (TORCHRUN_RANK_1, True, [], "is one file, which torchrun cannot share out"),
        ({}, False, ["--html", "--skip-existing"], "drop one of the two"),
        ({"WORLD_SIZE": "2"}, False, [], "WORLD_SIZE=2 without a valid RANK"),
    ],
)
def test_flags_refused_in_one_line(inputs, tmp_path, monkeypatch, capsys, env, one_file, flags, pattern):
    weights, src = inputs
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    src = src / "img_000.png" if one_file else src
    # Refused before the ranks meet: joining a process group here, without MASTER_ADDR, would raise.
    assert main(_translate(weights, src, tmp_path / "out", *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and pattern in err[0], err
    assert not (tmp_path / "out").exists()
