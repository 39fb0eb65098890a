"""The `fastcycle` command: error lines, train and translate end to end on tiny data."""

import argparse
import contextlib
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastcycle.cli import build_parser, main
from fastcycle.config import field_index, flag
from fastcycle.models import build_generator
from fastcycle.trained import load_generator
from tests.conftest import write_images

TINY = [
    "--netG",
    "resnet_6blocks",
    "--ngf",
    "4",
    "--ndf",
    "4",
    "--netD",
    "n_layers",
    "--n-layers-D",
    "2",
    "--load-size",
    "36",
    "--crop-size",
    "32",
    "--batch-size",
    "2",
    "--num-workers",
    "0",
    "--log-every",
    "1",
    "--sample-every",
    "0",
]


def run_cli(*args):
    """`fastcycle ARGS` run in this process as the entry point runs it (`python -m fastcycle` exits with
    main's status): the exit status and what it wrote. In-process, each call costs no interpreter and
    torch start-up; test_the_entry_point_in_a_fresh_process runs the real one."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's own exits
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _one_error_line(proc, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one clear line, no traceback
    assert lines[0].startswith("fastcycle: error: ")
    assert pattern in lines[0], lines[0]


def test_the_entry_point_in_a_fresh_process(tmp_path):
    """`python -m fastcycle` as a shell sees it: exit status 2 and one line on stderr, nothing else."""
    args = ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    proc = subprocess.run(
        [sys.executable, "-m", "fastcycle", *args], capture_output=True, text=True, timeout=300
    )
    _one_error_line(proc, "does not exist; pass --data DIR with trainA/ and trainB/")
    assert proc.stdout == ""


def test_missing_folder(tmp_path):
    proc = run_cli("train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    _one_error_line(proc, "does not exist; pass --data DIR with trainA/ and trainB/")


def test_empty_domain_folder(tmp_path):
    write_images(tmp_path / "trainA", 2)
    (tmp_path / "trainB").mkdir()
    proc = run_cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    _one_error_line(proc, "trainB holds no images")


def test_unknown_flag_suggests_the_right_one():
    proc = run_cli("train", "--lamda-identity", "0.1")
    _one_error_line(
        proc, "unknown option --lamda-identity for `fastcycle train`; did you mean --lambda-identity?"
    )


def test_device_and_kernels_mean_the_same_in_every_command():
    """--device and --kernels: training's default, choices and help (RuntimeConfig's) wherever they are
    declared. Training's flags add their default to the help, export says what else its device is for."""
    index = field_index()
    declared: dict[str, set[str]] = {"device": set(), "kernels": set()}
    for command, parser in build_parser().commands.items():
        for action in parser.actions:
            if action.dest in declared:
                f = index[action.dest][1]
                assert action.option_strings == [flag(action.dest)], command
                assert action.help.startswith(f.metadata["help"]), (command, action.help)
                assert action.help.removeprefix(f.metadata["help"]) in (
                    "",
                    f" (default: {f.default})",
                    " (AOTI target and parity checks)",
                ), (command, action.help)
                assert action.default in (f.default, argparse.SUPPRESS), command  # SUPPRESS: the config's
                assert action.choices == f.metadata.get("choices"), command
                declared[action.dest].add(command)
    assert declared == {
        "device": {"train", "distill", "translate", "eval", "export", "sample", "serve"},
        "kernels": {"train", "distill", "translate", "eval", "serve"},
    }


def test_bad_flag_value():
    _one_error_line(
        run_cli("train", "--preset", "cyclegan", "--crop-size", "300"),
        "--crop-size 300 is larger than --load-size 286",
    )
    _one_error_line(run_cli("train", "--norm", "group"), "invalid choice: 'group'")


def _translate(checkpoint, input, output, *flags):
    """The arguments of `fastcycle translate CHECKPOINT INPUT OUTPUT FLAGS`."""
    return [
        "translate",
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(input),
        "--output",
        str(output),
        *flags,
    ]


def test_translate_wrong_checkpoint(tmp_path):
    write_images(tmp_path / "in", 1)
    torch.save(build_generator("resnet_9blocks", ngf=8).state_dict(), tmp_path / "g.pth")
    proc = run_cli(*_translate(tmp_path / "g.pth", tmp_path / "in", tmp_path / "out"))
    _one_error_line(proc, "does not fit this network")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    proc = run_cli(*_translate(tmp_path / "junk.pt", tmp_path / "in", tmp_path / "out"))
    _one_error_line(proc, "is not a readable checkpoint")


def test_train_then_translate(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--max-steps", "3", *TINY]) == 0
    (dataset / "testA" / "sub").mkdir()
    Image.fromarray(np.zeros((30, 42, 3), np.uint8)).save(dataset / "testA" / "sub" / "odd.jpg")  # not /4
    out = tmp_path / "translated"
    assert main(_translate(run, dataset / "testA", out, "--batch-size", "2", "--device", "cpu")) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["img_000.png", "img_001.png", "sub/odd.png"]
    assert Image.open(out / "sub" / "odd.png").size == (42, 30)  # same size as the input
    assert "translated 3 images" in capsys.readouterr().out
    # The translations are the checkpoint's generator applied to the inputs.
    net = load_generator(run, "AtoB")
    x = torch.from_numpy(np.array(Image.open(dataset / "testA" / "img_000.png"))).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = ((net(x.float() / 127.5 - 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    got = torch.from_numpy(np.array(Image.open(out / "img_000.png"))).permute(2, 0, 1)[None]
    assert (y.int() - got.int()).abs().max() <= 1  # batch 2 vs 1 conv rounding may flip one level


def test_translate_with_a_reference_generator_and_a_bad_image(tmp_path):
    g = build_generator("resnet_6blocks", ngf=8)
    torch.save(g.state_dict(), tmp_path / "latest_net_G_A.pth")
    write_images(tmp_path / "in", 3, size=(32, 32))
    (tmp_path / "in" / "img_001.png").write_bytes(b"broken")
    out = tmp_path / "out"
    flags = ("--netG", "resnet_6blocks", "--ngf", "8", "--device", "cpu")
    assert main(_translate(tmp_path, tmp_path / "in", out, *flags)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img_000.png", "img_002.png"]


@pytest.mark.parametrize("inside", ["", "sub"])
def test_translate_never_writes_into_its_input(tmp_path, inside):
    torch.save(build_generator("resnet_6blocks", ngf=8).state_dict(), tmp_path / "g.pth")
    write_images(tmp_path / "in", 1)
    before = (tmp_path / "in" / "img_000.png").read_bytes()
    flags = ("--netG", "resnet_6blocks", "--ngf", "8")
    proc = run_cli(*_translate(tmp_path / "g.pth", tmp_path / "in", tmp_path / "in" / inside, *flags))
    _one_error_line(proc, "is inside the input folder")
    assert (tmp_path / "in" / "img_000.png").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["train", "--model", "pix2pix"], "--model pix2pix has no built-in demo: pass --data DIR"),
        (["train", "--model", "dcgan", "--netG", "resnet_9blocks"], "--model dcgan goes with --netG dcgan"),
        (["train", "--netG", "unet_256", "--crop-size", "128"], "needs crops that are a multiple of 256"),
        (["train", "--label-smoothing", "1.2,0.7"], "--label-smoothing '1.2,0.7' is not"),
        (["plot", "nowhere_run"], "no such run folder"),
        (["sample", "--checkpoint", "nowhere.pt"], "nowhere.pt"),
    ],
)
def test_model_family_errors_are_one_line(tmp_path, args, pattern):
    out = ["--out", str(tmp_path / "run")] if args[0] == "train" else []
    _one_error_line(run_cli(*args, *out), pattern)
