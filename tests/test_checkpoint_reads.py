"""Each command reads a checkpoint file once: counted with a wrapper around torch.load (every checkpoint
read goes through it: fastcycle.checkpoint.safe_load)."""

from pathlib import Path

import pytest
import torch

from fastcycle.checkpoint import CHECKPOINT_NAME
from fastcycle.cli import main
from fastcycle.train import train
from tests.conftest import write_images
from tests.test_train import tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reads")
    write_images(root / "data" / "trainA", 4, seed=1)
    write_images(root / "data" / "trainB", 4, seed=2)
    write_images(root / "photos", 3, seed=3)
    train(tiny(data=str(root / "data"), out=str(root / "run"), max_steps=1))
    return root


@pytest.fixture
def reads(monkeypatch):
    """The paths torch.load is called on, in order."""
    seen, real = [], torch.load

    def counting(f, *args, **kwargs):
        seen.append(Path(f).name)
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return seen


@pytest.mark.parametrize("html", [False, True])
def test_translate_reads_the_checkpoint_once(run, tmp_path, reads, html):
    out = tmp_path / "out"
    flags = ["--input", str(run / "photos"), "--output", str(out), "--device", "cpu", "--kernels", "torch"]
    assert main(["translate", "--checkpoint", str(run / "run"), *flags, *(["--html"] if html else [])]) == 0
    assert reads == [CHECKPOINT_NAME]
    assert len(list(out.glob("*.png"))) == 3 and (out / "index.html").exists() == html
    assert len(list((out / "reconstructed").glob("*.png"))) == (3 if html else 0)  # G_BA from the same read


def test_export_reads_the_checkpoint_once(run, tmp_path, reads):
    argv = ["export", "--checkpoint", str(run / "run"), "--safetensors", str(tmp_path / "g.safetensors")]
    assert main([*argv, "--device", "cpu"]) == 0
    assert reads == [CHECKPOINT_NAME]  # the read-back check opens the .safetensors, without torch.load


def test_a_triton_repository_of_both_generators_reads_the_checkpoint_once(run, tmp_path, reads):
    argv = [
        "export",
        "--checkpoint",
        str(run / "run"),
        "--triton-repo",
        str(tmp_path / "repo"),
        "--size",
        "32",
    ]
    assert main([*argv, "--device", "cpu"]) == 0
    assert reads == [CHECKPOINT_NAME]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [".fastcycle-triton-repo", "AtoB", "BtoA"]
