"""The distribution, as a user gets it: `pip install` of the wheel (not editable) into an environment
apart from the source tree holds every package of the checkout under the `fastcycle.*` namespace only,
and its `fastcycle` command answers every subcommand's --help, trains two steps and translates."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# The checkout's folder -> the package it installs as (setup.py's package_dir).
PACKAGE_ROOTS = {"fastcycle": "fastcycle", "kernels": "fastcycle.kernels", "export": "fastcycle.export"}


def source_packages() -> set[str]:
    """Every folder of the checkout's package roots that holds Python files, as a package name."""
    found = set()
    for folder, package in PACKAGE_ROOTS.items():
        for py in (ROOT / folder).rglob("*.py"):
            parts = py.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((package, *parts)))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy, so the checkout gets no build/ or egg-info; no isolation, so no network.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in PACKAGE_ROOTS:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src],
        check=True,
        timeout=300,
    )
    (whl,) = dist.glob("fastcycle-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, str]:
    """A fresh virtual environment with the wheel pip-installed into it, and the environment variables
    that run its `fastcycle`. Its dependencies (torch, a few GB) are the test environment's, reached
    through a .pth line: a path entry only, so the test environment's editable fastcycle (a .pth hook
    in the same folder) stays out of it."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip itself comes from the test environment; --ignore-installed: the editable fastcycle it can see
    # there is another environment's, neither to be removed nor taken as this install.
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel],
        check=True,
        timeout=300,
    )
    keep = ("HOME", "OMP_NUM_THREADS", "TRITON_INTERPRET", "TORCHINDUCTOR_VEC_ISA_OK", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return {**env, "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "VIRTUAL_ENV": str(venv)}


def fastcycle(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed `fastcycle` command, run from a folder outside the checkout."""
    return subprocess.run(["fastcycle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_holds_every_package_of_the_checkout_and_the_namespace_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"fastcycle"}  # no top-level `kernels` or `export` in site-packages
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages == source_packages()  # a folder without __init__.py, or left out, fails here
    modules = {n for n in names if n.endswith(".py")}
    for folder, package in PACKAGE_ROOTS.items():
        for py in (ROOT / folder).rglob("*.py"):
            assert package.replace(".", "/") + "/" + py.relative_to(ROOT / folder).as_posix() in modules
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fastcycle = fastcycle.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_imports_every_package_from_itself(installed, tmp_path):
    packages = sorted(source_packages())
    code = (
        "import importlib, sys\n"
        f"for name in {packages!r}:\n"
        "    print(name, importlib.import_module(name).__file__)\n"
    )
    out = subprocess.run(
        ["python", "-c", code], cwd=tmp_path, env=installed, capture_output=True, text=True, check=True
    )
    files = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert sorted(files) == packages
    venv = installed["VIRTUAL_ENV"]
    assert all(f.startswith(venv) for f in files.values()), files  # the wheel's copy, not the checkout


def test_installed_command_answers_help_trains_and_translates(installed, tmp_path):
    top = fastcycle(installed, tmp_path, "--help")
    commands = top.stdout.split("{", 1)[1].split("}", 1)[0].split(",")  # usage: fastcycle [-h] {train,...}
    assert top.returncode == 0 and {"train", "translate", "export", "distill"} <= set(commands)
    for command in commands:
        proc = fastcycle(installed, tmp_path, command, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: fastcycle {command}"), proc.stderr
    # Two steps of the built-in demo (its data is built from images scikit-image ships), then translate.
    run = tmp_path / "run"
    # --no-report-fid: the demo's FID/KID (Inception, ~10 s on a CPU) is tested in test_demo.py
    train_args = ("--out", str(run), "--max-steps", "2", "--device", "cpu", "--no-report-fid")
    train = fastcycle(installed, tmp_path, "train", *train_args)
    assert train.returncode == 0, train.stderr
    assert (run / "checkpoint.pt").is_file() and "PSNR G_AB(a) vs f(a)" in train.stdout
    inputs = sorted((run / "demo_data" / "testA").glob("*.png"))[:3]
    (tmp_path / "in").mkdir()
    for path in inputs:
        shutil.copy(path, tmp_path / "in" / path.name)
    out = tmp_path / "out"
    args = [
        "--checkpoint",
        str(run),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(out),
        "--device",
        "cpu",
    ]
    translate = fastcycle(installed, tmp_path, "translate", *args)
    assert translate.returncode == 0, translate.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in inputs]
    for path in inputs:
        assert Image.open(out / path.name).size == Image.open(path).size


def test_the_cli_loads_without_torch():
    # `fastcycle --help` and flag errors must answer in a fraction of a second, not after importing torch.
    code = "import sys, fastcycle.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
