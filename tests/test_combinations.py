"""Every combination of the options users combine ends in a result or in one line naming the clash.

FACTORS below are the options and their values: 16 options, 6,220,800 combinations. An all-pairs
(pairwise) covering set holds every pair of values of two options in some case; `pairwise` makes one
greedily and deterministically: each case starts from the first pair not yet covered, then every
other option takes the value that covers the most new pairs (ties: the cheaper value, listed first),
among those that keep the case completable without a clash. RULES lists the clashes: a pair that
occurs in no case free of them (model dcgan with netG unet_128) is not a pair to cover but a clash to
be refused. The set: CASES accepted cases and REFUSED refused ones (sizes asserted in
test_the_covering_set); on a machine without CUDA, 26 and 12.

An accepted case (validate() accepts it, RULES see no clash) trains 2 steps (the demo also evaluates
its held-out tiles), translates three odd-sized images to images of the same sizes (DCGAN: samples a
grid) and exports --onnx: each command exits 0, prints no traceback and writes what the options imply
(a checkpoint of step 2 with the case's options, its metrics lines, whole images of the expected sizes,
a valid ONNX graph of the family's inputs and outputs that passed the export's parity check). A refused
case ends with exit status 2 and one line, `fastcycle: error: ...`, naming an option of the clashing
pair; validate() refuses it with that line (so it is refused before anything is written), except
`--kernels triton` without CUDA, which the device decides.

Kept to a few minutes on 2 cores: tiny networks (--ngf/--ndf 4), 32x32 crops (64 for DCGAN, 128 and
256 for the U-Nets), 4 images per domain, --num-workers 0, and in-process calls of fastcycle.cli.main
(a crash would still propagate as an exception and fail the case; test_a_case_in_a_fresh_process
runs one case through `python -m fastcycle`). Two choices keep it in budget: `--compile` runs Dynamo
and AOTAutograd at fullgraph=True through the aot_eager backend, as Inductor's C++ code generation
takes minutes per case on a CPU (test_compile.py tests Inductor); and `--kernels triton` is run as a
CPU user meets it (Triton's interpreter, which the other tests use, is unset), i.e. refused.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from fastcycle.checkpoint import load_checkpoint
from fastcycle.cli import _parse, build_parser, main, train_config
from fastcycle.config import validate
from fastcycle.data import demo
from fastcycle.errors import UserError
from tests.conftest import write_images
from tests.toy_data import write_pix2pix

FACTORS: dict[str, tuple] = {  # the first value of each is the cheapest, preferred on ties
    "model": ("cycle_gan", "pix2pix", "dcgan"),
    "netG": ("resnet_6blocks", "resnet_9blocks", "unet_128", "unet_256", "dcgan"),
    "netD": ("n_layers", "basic", "pixel", "dcgan"),
    "norm": ("instance", "batch", "none"),
    "gan_mode": ("lsgan", "vanilla", "wgangp"),
    "preprocess": ("resize_and_crop", "crop", "scale_width_and_crop", "scale_width", "none"),
    "loader": ("torch", "gpu-cache", "dali"),
    "amp": (False, True),
    "channels_last": (False, True),
    "compile": (False, True),
    "kernels": ("torch", "auto", "triton"),
    "aux_classifier": (False, True),
    "ema_decay": (0.0, 0.9),
    "pool_size": (None, 0),  # None: the preset's (CycleGAN 50)
    "batch_size": (1, 3),
    "data": ("folder", "demo"),  # demo: no --data, the built-in CycleGAN demo
}
RESNETS, UNETS = ("resnet_6blocks", "resnet_9blocks"), ("unet_128", "unet_256")
CUDA = torch.cuda.is_available()


def _dcgan_apart(c: dict, a: str, b: str) -> bool:
    return (c[a] == "dcgan") != (c[b] == "dcgan")


# The clashes: name -> (the options it reads, whether a case holding them clashes).
RULES = {
    "--model dcgan with --netG dcgan": (("model", "netG"), lambda c: _dcgan_apart(c, "model", "netG")),
    "--model dcgan with --netD dcgan": (("model", "netD"), lambda c: _dcgan_apart(c, "model", "netD")),
    "--netG dcgan with --netD dcgan": (("netG", "netD"), lambda c: _dcgan_apart(c, "netG", "netD")),
    "--aux-classifier is CycleGAN's": (
        ("aux_classifier", "model"),
        lambda c: c["aux_classifier"] and c["model"] != "cycle_gan",
    ),
    "--aux-classifier needs a PatchGAN": (
        ("aux_classifier", "netD"),
        lambda c: c["aux_classifier"] and c["netD"] == "pixel",
    ),
    "--aux-classifier needs labels": (
        ("aux_classifier", "data"),
        lambda c: c["aux_classifier"] and c["data"] == "demo",
    ),
    "the demo is CycleGAN's": (
        ("model", "data"),
        lambda c: c["model"] != "cycle_gan" and c["data"] == "demo",
    ),
    "pix2pix and DCGAN read with --loader torch": (
        ("model", "loader"),
        lambda c: c["model"] != "cycle_gan" and c["loader"] != "torch",
    ),
    "DCGAN needs a cropping --preprocess": (
        ("netG", "preprocess"),
        lambda c: c["netG"] == "dcgan" and c["preprocess"] in ("scale_width", "none"),
    ),
    "U-Nets need a cropping --preprocess": (
        ("netG", "preprocess"),
        lambda c: c["netG"] in UNETS and c["preprocess"] in ("scale_width", "none"),
    ),
    "--kernels triton covers the ResNets": (
        ("kernels", "netG"),
        lambda c: c["kernels"] == "triton" and c["netG"] not in RESNETS,
    ),
}
DEVICE_RULES = (
    {} if CUDA else {"--kernels triton needs CUDA": (("kernels",), lambda c: c["kernels"] == "triton")}
)
ALL_RULES = RULES | DEVICE_RULES


def clashes(case: dict) -> set[str]:
    """The rules a (partial) case breaks, among those whose options it sets."""
    return {
        name for name, (keys, broken) in ALL_RULES.items() if all(k in case for k in keys) and broken(case)
    }


def complete(case: dict, allowed: frozenset = frozenset()) -> dict | None:
    """`case` with every option set and no clash beyond `allowed` (the cheapest such), or None."""
    if clashes(case) - allowed:
        return None
    missing = next((f for f in FACTORS if f not in case), None)
    if missing is None:
        return case
    for value in FACTORS[missing]:
        done = complete(case | {missing: value}, allowed)
        if done is not None:
            return done
    return None


def _pairs(case: dict) -> set:
    return {
        ((a, case[a]), (b, case[b])) for a, b in itertools.combinations(FACTORS, 2) if a in case and b in case
    }


def pairwise() -> tuple[list[dict], list[dict]]:
    """(accepted cases covering every feasible pair, one refused case per distinct clash of a pair)."""
    every = {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(FACTORS, 2)
        for va in FACTORS[a]
        for vb in FACTORS[b]
    }
    feasible = {p for p in every if complete(dict(p)) is not None}
    uncovered, cases = set(feasible), []
    order = sorted(uncovered, key=lambda p: [(list(FACTORS).index(f), FACTORS[f].index(v)) for f, v in p])
    while uncovered:
        case = dict(next(p for p in order if p in uncovered))
        for f in FACTORS:
            if f in case:
                continue
            gains = [
                (len(_pairs(case | {f: v}) & uncovered), -i)
                for i, v in enumerate(FACTORS[f])
                if complete(case | {f: v}) is not None
            ]
            case[f] = FACTORS[f][-max(gains)[1]]
        uncovered -= _pairs(case)
        cases.append(case)
    refused, seen = [], set()
    for pair in sorted(every - feasible, key=str):
        rules = frozenset(clashes(dict(pair)))
        if rules and rules not in seen:
            seen.add(rules)
            keys = {f for f, _ in pair}  # else also the clashes the pair forces, all on its options
            near = frozenset(name for name, (reads, _) in ALL_RULES.items() if keys & set(reads))
            case = complete(dict(pair), rules) or complete(dict(pair), near)
            refused.append(case | {"_pair": tuple(f for f, _ in pair)})
    return cases, refused


CASES, REFUSED = pairwise()
ODD_SIZES = ((37, 29), (52, 44), (13, 11))  # (width, height): not multiples of 4, one below a U-Net's pad


def sizes(case: dict) -> tuple[int, int]:
    """(--load-size, --crop-size): the crop each generator needs, kept small."""
    crop = {"unet_128": 128, "unet_256": 256, "dcgan": 64}.get(case["netG"], 32)
    return crop + 4, crop


def argv(case: dict, out: Path, data: dict[str, Path]) -> list[str]:
    load, crop = sizes(case)
    args = ["train", "--out", str(out), "--ngf", "4", "--ndf", "4", "--load-size", str(load)]
    args += ["--crop-size", str(crop), "--max-steps", "2", "--log-every", "1", "--sample-every", "0"]
    args += ["--num-workers", "0", "--no-report-fid"]  # the demo's FID/KID: tests/test_demo.py's concern
    for f, v in case.items():
        if f.startswith("_") or f == "data" or v is None:
            continue
        if isinstance(v, bool):
            args.append(("--" if v else "--no-") + f.replace("_", "-"))
        else:
            args += ["--" + f.replace("_", "-"), str(v)]
    if case["data"] == "folder":
        args += ["--data", str(data[case["model"]])]
        if case["aux_classifier"]:
            args += ["--labels-A", str(data["labels_A"]), "--labels-B", str(data["labels_B"])]
    return args


def case_id(case: dict) -> str:
    """model-netG-netD, then each other option not at its first value: cycle_gan-unet_128-pixel-amp-b3."""
    parts = [case["model"], case["netG"], case["netD"]]
    for f, v in case.items():
        if f in ("model", "netG", "netD") or f.startswith("_") or v == FACTORS[f][0]:
            continue
        parts.append(f if v is True else f"b{v}" if f == "batch_size" else f"{f}={v}")
    return "-".join(parts)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("combinations")
    write_images(root / "unpaired" / "trainA", 4, size=(40, 36), seed=1)
    write_images(root / "unpaired" / "trainB", 3, size=(40, 36), seed=2, ext="jpg")
    write_pix2pix(root / "pairs", 4, 40)
    write_images(root / "folder", 4, size=(40, 36), seed=3)
    for domain in ("A", "B"):
        rows = [f"img_{i:03d}.png,{'stripes' if i % 2 else 'plain'}" for i in range(4)]
        if domain == "B":
            rows = [r.replace(".png", ".jpg") for r in rows[:3]]
        (root / f"labels_{domain}.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    for i, (w, h) in enumerate(ODD_SIZES):
        write_images(root / "odd", 1, size=(w, h), seed=10 + i)
        (root / "odd" / "img_000.png").rename(root / "odd" / f"odd_{w}x{h}.png")
    demo.build(root / "demo_data")  # built once; each demo case gets a copy in its run folder
    return {
        "cycle_gan": root / "unpaired",
        "pix2pix": root / "pairs",
        "dcgan": root / "folder",
        "labels_A": root / "labels_A.csv",
        "labels_B": root / "labels_B.csv",
        "odd": root / "odd",
        "demo": root / "demo_data",
    }


@pytest.fixture
def cpu_user(monkeypatch, request):
    """The environment of a user's process: Triton's CPU interpreter off (conftest turns it on) and,
    for --compile, the aot_eager backend (see the module docstring)."""
    if not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        request.getfixturevalue("aot_eager")
    yield
    torch._dynamo.reset()  # a fresh process's compile caches, as each `fastcycle train` has


def _run(capfd, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capfd.readouterr()
    assert "Traceback" not in err, err[-3000:]
    return code, out, err


def test_the_covering_set():
    assert (len(CASES), len(REFUSED)) == ((26, 12) if not CUDA else (len(CASES), len(REFUSED)))
    covered = set().union(*(_pairs(c) for c in CASES))
    for a, b in itertools.combinations(FACTORS, 2):
        for va, vb in itertools.product(FACTORS[a], FACTORS[b]):
            pair = ((a, va), (b, vb))
            assert pair in covered or complete(dict(pair)) is None, pair  # in a case, or it clashes
    for case in CASES:
        assert not clashes(case)
        paths = {k: Path(k) for k in (*FACTORS["model"], "labels_A", "labels_B")}
        validate(
            train_config(_parse(build_parser(), argv(case, Path("x"), paths)))
        )  # RULES agree with validate(): it accepts every case they accept


# Each family's networks, and the losses of its metrics lines: its own, its --gan-mode wgangp penalties,
# and with --aux-classifier (CycleGAN's) the class losses.
NETWORKS = {"cycle_gan": {"G_AB", "G_BA", "D_A", "D_B"}, "pix2pix": {"G", "D"}, "dcgan": {"G", "D"}}
LOSSES = {
    "cycle_gan": {"D_A", "G_BA", "cycle_A", "idt_A", "D_B", "G_AB", "cycle_B", "idt_B"},
    "pix2pix": {"G_GAN", "G_L1", "D_real", "D_fake"},
    "dcgan": {"G", "D_real", "D_fake"},
}
PENALTIES = {"cycle_gan": {"gp_A", "gp_B"}, "pix2pix": {"gp"}, "dcgan": {"gp"}}
CLASS_LOSSES = {"cls_A", "cls_B", "G_cls"}


def check_run(out: Path, case: dict) -> int:
    """The run folder holds what 2 steps of `case` wrote: a whole checkpoint of step 2 with the case's
    options and finite weights of its family's networks, config.json the same config, and a metrics line
    per step (--log-every 1) with the family's losses, all finite. Returns the run's nz."""
    state = load_checkpoint(out)  # the digest of its tensors is checked: no byte of it is missing
    assert json.loads((out / "config.json").read_text()) == state["config"]
    fields = {k: v for section in state["config"].values() for k, v in section.items()}
    options = {f: v for f, v in case.items() if not f.startswith("_") and f != "data" and v is not None}
    assert state["step"] == 2 and {f: fields[f] for f in options} == options
    nets = state["model"]["nets"]
    assert set(nets) == NETWORKS[case["model"]]
    assert all(t.isfinite().all() for net in nets.values() for t in net.values())
    family = case["model"]
    losses = LOSSES[family] | (PENALTIES[family] if case["gan_mode"] == "wgangp" else set())
    losses |= CLASS_LOSSES if case["aux_classifier"] else set()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        logged = {k: v for k, v in line.items() if k not in ("step", "epoch", "lr", "pairs_per_s", "mfu")}
        assert set(logged) == losses and all(math.isfinite(v) for v in logged.values()), line
    return fields["nz"]


def check_image(path: Path, size: tuple[int, int]) -> None:
    """`path` is a whole RGB PNG of `size` (width, height): every pixel decodes."""
    with Image.open(path) as img:
        img.load()  # raises on a truncated file
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", size), path


def onnx_io(path: Path) -> tuple[dict, dict]:
    """({input: shape}, {output: shape}) of a valid float32 ONNX model; a named dimension by its name."""
    model = onnx.load(path)
    onnx.checker.check_model(model)

    def shapes(values) -> dict[str, list]:
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in values)
        return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in values}

    return shapes(model.graph.input), shapes(model.graph.output)


@pytest.mark.parametrize("case", CASES, ids=[f"{i:02d}-{case_id(c)}" for i, c in enumerate(CASES)])
def test_an_accepted_case_trains_translates_and_exports(case, data, tmp_path, capfd, cpu_user):
    out = tmp_path / "run"
    if case["data"] == "demo":
        shutil.copytree(data["demo"], out / "demo_data")
    code, stdout, err = _run(capfd, argv(case, out, data))
    assert code == 0, err[-3000:]
    assert "done: 2 steps" in err
    if case["data"] == "demo":  # the demo's evaluation finished
        assert stdout.startswith("PSNR G_AB(a) vs f(a): "), stdout
    nz = check_run(out, case)
    if case["model"] == "dcgan":
        grid = tmp_path / "g.png"
        code, _, err = _run(capfd, ["sample", "--checkpoint", str(out), "--n", "4", "--out", str(grid)])
        assert code == 0, err
        check_image(grid, (4 * 66 + 2, 66 + 2))  # one row of 4 tiles of 64 with 2-pixel borders
        assert np.load(grid.with_suffix(".npy")).shape == (4, nz)  # the grid's noise, one vector a tile
    else:
        translated = tmp_path / "translated"
        args = [
            "translate",
            "--checkpoint",
            str(out),
            "--input",
            str(data["odd"]),
            "--output",
            str(translated),
        ]
        code, _, err = _run(capfd, [*args, "--batch-size", "2"])
        assert code == 0, err
        assert sorted(p.name for p in translated.iterdir()) == sorted(
            f"odd_{w}x{h}.png" for w, h in ODD_SIZES
        )
        for w, h in ODD_SIZES:
            check_image(translated / f"odd_{w}x{h}.png", (w, h))
    size = sizes(case)[1]
    onnx_path = tmp_path / "g.onnx"
    code, stdout, err = _run(
        capfd, ["export", "--checkpoint", str(out), "--onnx", str(onnx_path), "--size", str(size)]
    )
    assert code == 0, err
    assert any(line.startswith("parity onnxruntime") for line in stdout.splitlines()), stdout
    if case["model"] == "dcgan":  # noise in, a 64x64 image out
        io = ({"noise": ["batch", nz, 1, 1]}, {"image": ["batch", 3, 64, 64]})
    else:  # images of --size in and out
        io = ({"image": ["batch", 3, size, size]}, {"translated": ["batch", 3, size, size]})
    assert onnx_io(onnx_path) == io


@pytest.mark.parametrize(
    "case", REFUSED, ids=[f"{i:02d}-{'-'.join(c['_pair'])}" for i, c in enumerate(REFUSED)]
)
def test_a_clash_is_one_line(case, data, tmp_path, capfd, cpu_user):
    out = tmp_path / "run"
    code, _, err = _run(capfd, argv(case, out, data))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fastcycle: error: "), err[-3000:]
    assert any("--" + f.replace("_", "-") in lines[0] for f in case["_pair"]), lines[0]
    if not clashes(case) & set(DEVICE_RULES):
        with pytest.raises(UserError) as refused:  # validate() says it: nothing was written first
            validate(train_config(_parse(build_parser(), argv(case, out, data))))
        assert lines[0] == f"fastcycle: error: {refused.value}"
        assert not out.exists()


def test_a_case_in_a_fresh_process(data, tmp_path):
    """The exit status and stderr of `python -m fastcycle`, as a shell sees them, for the first case."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastcycle", *argv(CASES[0], tmp_path / "run", data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a user's environment
    refused = subprocess.run(
        [sys.executable, "-m", "fastcycle", *argv(REFUSED[0], tmp_path / "refused", data)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
