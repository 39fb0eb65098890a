"""`fastcycle translate --backend onnxruntime|aoti|tensorrt` given a run folder or a checkpoint file: the
export is made once beside the checkpoint, reused, and made again when the checkpoint changes."""

import numpy as np
import pytest
from PIL import Image

from fastcycle.cli import main
from fastcycle.train import train
from tests.conftest import write_images
from tests.test_train import tiny


@pytest.fixture
def run(tmp_path):
    write_images(tmp_path / "data" / "trainA", 4, size=(40, 36), seed=1)
    write_images(tmp_path / "data" / "trainB", 4, size=(40, 36), seed=2)
    write_images(tmp_path / "photos", 2, size=(37, 29), seed=3)  # odd sizes: padded, cropped back
    write_images(tmp_path / "photos" / "sub", 1, size=(52, 44), seed=4)
    train(tiny(data=str(tmp_path / "data"), out=str(tmp_path / "run"), max_steps=2))
    return tmp_path / "run"


def _cli(capfd, *args) -> tuple[int, str]:
    code = main(["translate", *map(str, args)])
    return code, capfd.readouterr().err


def _images(folder) -> dict[str, np.ndarray]:
    return {
        p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))
    }


def _exports(run, pattern="export-*"):
    return sorted(p.name for p in run.glob(pattern))


def test_onnxruntime_export_is_made_once_reused_and_remade_for_a_new_checkpoint(run, tmp_path, capfd):
    photos = tmp_path / "photos"
    io = ("--input", photos, "--backend", "onnxruntime", "--output")
    code, err = _cli(capfd, "--checkpoint", run, *io, tmp_path / "first")
    assert code == 0, err
    assert "export: " in err and "ready; later translates of this checkpoint reuse it" in err
    (made,) = _exports(run)
    assert made.startswith("export-AtoB-") and made.endswith(".onnx")
    mtime = (run / made).stat().st_mtime_ns

    # The checkpoint file itself (same bytes, same options): the same export, not made again.
    code, err = _cli(capfd, "--checkpoint", run / "checkpoint.pt", *io, tmp_path / "second")
    assert code == 0 and f"export: reusing {run / made}" in err, err
    assert _exports(run) == [made] and (run / made).stat().st_mtime_ns == mtime

    # The same images as the torch backend (within ONNX Runtime's float reordering: one level of 255).
    assert _cli(capfd, "--checkpoint", run, "--input", photos, "--output", tmp_path / "torch")[0] == 0
    ours, theirs = _images(tmp_path / "second"), _images(tmp_path / "torch")
    assert ours.keys() == theirs.keys() == {"img_000.png", "img_001.png", "sub/img_000.png"}
    for name, img in ours.items():
        assert img.shape == theirs[name].shape == np.asarray(Image.open(photos / name)).shape
        assert np.abs(img.astype(int) - theirs[name]).max() <= 1, name

    # Other options (the other direction): another file beside the first.
    assert _cli(capfd, "--checkpoint", run, "--direction", "BtoA", *io, tmp_path / "back")[0] == 0
    assert len(_exports(run, "export-BtoA-*.onnx")) == 1 and made in _exports(run)

    # The run trains on: a new checkpoint, a new export, and the stale one is gone.
    train(tiny(data=str(tmp_path / "data"), out=str(run), max_steps=4, resume=True))
    code, err = _cli(capfd, "--checkpoint", run, *io, tmp_path / "third")
    assert code == 0 and "ready" in err and "reusing" not in err, err
    (remade,) = _exports(run, "export-AtoB-*")
    assert remade != made
    third, first = _images(tmp_path / "third"), _images(tmp_path / "first")
    assert any(not np.array_equal(third[k], first[k]) for k in first)  # the new weights translate


def test_paths_that_exist_are_never_said_not_to(run, tmp_path, capfd):
    photos, out = tmp_path / "photos", tmp_path / "out"
    code, err = _cli(
        capfd,
        "--checkpoint",
        tmp_path / "nope",
        "--backend",
        "onnxruntime",
        "--input",
        photos,
        "--output",
        out,
    )
    assert code == 2 and err.strip() == (
        f"fastcycle: error: checkpoint {tmp_path / 'nope'} does not exist; pass a run folder, checkpoint.pt "
        "or a .pth"
    )
    code, err = _cli(capfd, "--checkpoint", photos, "--backend", "aoti", "--input", photos, "--output", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        f"{photos} holds neither checkpoint.pt nor latest_net_G_A.pth" in err and "does not exist" not in err
    )
    code, err = _cli(capfd, "--checkpoint", run, "--backend", "tensorrt", "--input", photos, "--output", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    plan = run / "export-AtoB.plan"
    assert f"`fastcycle export --checkpoint {run} --direction AtoB --trt {plan} --size 256`" in err
    code, err = _cli(capfd, "--checkpoint", tmp_path / "g.onnx", "--input", photos, "--output", out)
    assert (
        code == 2
        and "g.onnx does not exist; export one with `fastcycle export --checkpoint RUN --onnx" in err
    )
    assert not _exports(run)
