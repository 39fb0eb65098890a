"""The distribution: a plain wheel installs the `fastcycle.*` namespace only, and the CLI starts fast."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy, so the checkout gets no build/ or egg-info; no isolation, so no network.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("fastcycle", "kernels", "export"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src],
        check=True,
        timeout=300,
    )
    (whl,) = dist.glob("fastcycle-*.whl")
    return whl


def test_wheel_holds_the_fastcycle_namespace_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"fastcycle"}  # no top-level `kernels` or `export` in site-packages
    for module in ("fastcycle/kernels/__init__.py", "fastcycle/export/__init__.py", "fastcycle/cli.py"):
        assert module in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fastcycle = fastcycle.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_imports_and_runs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        check=True,
        timeout=300,
    )
    code = "import fastcycle, fastcycle.kernels, fastcycle.export, fastcycle.models;print(fastcycle.__file__)"
    # Run from an empty folder with only the installed copy on the path: the checkout is not used.
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().startswith(str(target))
    help_ = subprocess.run(
        [sys.executable, "-m", "fastcycle", "train", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--lambda-identity" in help_.stdout


def test_the_cli_loads_without_torch():
    # `fastcycle --help` and flag errors must answer in a fraction of a second, not after importing torch.
    code = "import sys, fastcycle.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
