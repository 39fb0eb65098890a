"""FID/KID during training (--eval-every) and checkpoint.best.pt: one tiny CycleGAN run with real
Inception features shared by the module, its records checked against `fastcycle translate` and
fastcycle.quality, resumes that must keep a better best, and a best-file write that fails midway."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from fastcycle.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint, save_state
from fastcycle.cli import main
from fastcycle.config import parse_eval_every, validate
from fastcycle.data.folders import list_images
from fastcycle.data.scan import scan_domain
from fastcycle.errors import UserError
from fastcycle.plot import FID_COLORS, panels, plot_run, read_metrics
from fastcycle.quality.distances import compare
from fastcycle.quality.features import inception_features
from fastcycle.quality.realsets import read_images, real_features
from fastcycle.quality.weights import find, load_inception
from fastcycle.train import train
from fastcycle.train.evaluation import eval_due
from fastcycle.train.heldout import cycle_held_out, paired_held_out
from fastcycle.trained import read_generator_file
from tests.conftest import write_images
from tests.test_plot_gallery import _colour_count
from tests.test_train import tiny
from tests.toy_data import write_pix2pix

# --eval-every 1ep over --max-steps 6 at 4 steps per epoch (8 images, batch 2): epoch 1's end, the last step
EVAL_STEPS = [4, 6]


def _config(data, out, **overrides):
    base = dict(data=str(data), out=str(out), ngf=8, max_steps=6, n_epochs=2, n_epochs_decay=0)
    base |= dict(eval_every="1ep", ema_decay=0.5, tensorboard=True)  # EMA: what inference reads
    return tiny(**{**base, **overrides})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("train_eval")


@pytest.fixture(autouse=True)
def cache(root, monkeypatch):
    """The real sets' feature cache in the module's folder, never the home folder."""
    monkeypatch.setenv("FASTCYCLE_CACHE", str(root / "cache"))


@pytest.fixture(scope="module")
def run(root):
    """A 6-step run evaluated at steps 4 and 6 on 4 test images per domain."""
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: made before `cache` runs
        mp.setenv("FASTCYCLE_CACHE", str(root / "cache"))
        write_images(root / "data" / "trainA", 8, seed=1)
        write_images(root / "data" / "trainB", 8, seed=2)
        write_images(root / "data" / "testA", 4, seed=3)
        write_images(root / "data" / "testB", 4, seed=4)
        result = train(_config(root / "data", root / "run"))
        yield result, root


def _evals(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval" in r]


def test_an_evaluation_at_each_due_step_in_every_log(run):
    result, _ = run
    evals = _evals(result.run_dir)
    assert [r["step"] for r in evals] == EVAL_STEPS and evals == result.evals
    assert [r["step"] for r in read_metrics(result.run_dir / "metrics.jsonl") if "eval" not in r] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]  # the loss lines as without --eval-every
    for r in evals:
        assert set(r["eval"]) == {"AtoB", "BtoA"} and r["seconds"] > 0
        for q in r["eval"].values():
            assert math.isfinite(q["fid"]) and math.isfinite(q["kid"]) and q["n_fake"] == q["n_real"] == 4
        assert r["fid_sum"] == pytest.approx(r["eval"]["AtoB"]["fid"] + r["eval"]["BtoA"]["fid"], rel=1e-12)
    log = (result.run_dir / "train.log").read_text()
    assert (
        log.count("eval at step ") == len(EVAL_STEPS) and "eval: held out: testA/ (4) and testB/ (4)" in log
    )

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(result.run_dir / "tensorboard"))
    board.Reload()
    fid = [(e.step, e.value) for e in board.Scalars("eval/AtoB/fid")]
    assert fid == [(r["step"], pytest.approx(r["eval"]["AtoB"]["fid"], rel=1e-6)) for r in evals]  # float32


def test_the_best_file_holds_the_lowest_fid_and_translates(run, tmp_path):
    """checkpoint.best.pt holds the evaluation with the lowest FID sum, read by translate's loader: its
    generators' translations of the test images, measured here, have the recorded FID and KID, and
    `fastcycle translate` on the file writes those translations."""
    result, root = run
    evals = _evals(result.run_dir)
    best_file = result.run_dir / BEST_NAME
    best = load_checkpoint(best_file)
    lowest = min(evals, key=lambda r: r["fid_sum"])
    assert best["step"] == lowest["step"] and best["best"]["fid_sum"] == lowest["fid_sum"]
    so_far = [min([math.inf] + [e["fid_sum"] for e in evals[:i]]) for i in range(len(evals))]
    assert [r["best"] for r in evals] == [r["fid_sum"] < m for r, m in zip(evals, so_far, strict=True)]
    net, read, sha = load_inception(), read_generator_file(best_file), find().sha256
    for direction, source, target in (("AtoB", "testA", "testB"), ("BtoA", "testB", "testA")):
        images = np.stack(list(read_images(list_images(root / "data" / source))))  # (N, H, W, 3)
        G = read.generator(direction)
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1  # NCHW
            fake = ((G(x).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        real, _ = real_features(list_images(root / "data" / target), net, sha)  # the cache: the real set's
        q, recorded = compare(inception_features(list(fake), net), real), lowest["eval"][direction]
        # The same pixels as the run's: only the features' float32 rounding in another batch may differ.
        assert q.fid == pytest.approx(recorded["fid"], rel=1e-6)
        assert q.kid == pytest.approx(recorded["kid"], rel=1e-6)

        out = tmp_path / direction
        args = ["translate", "--checkpoint", str(best_file), "--input", str(root / "data" / source)]
        assert main([*args, "--output", str(out), "--direction", direction, "--device", "cpu"]) == 0
        written = np.stack(list(read_images(list_images(out)))).astype(int)
        # translate runs channels-last on a CPU: another fp32 summation order may round a pixel otherwise.
        assert np.abs(written - fake).max() <= 1


def _doctor_best(run_dir, fid_sum: float) -> bytes:
    """Rewrite checkpoint.best.pt with another recorded FID sum (weights kept, checksum renewed)."""
    state = load_checkpoint(run_dir / BEST_NAME)
    state["best"]["fid_sum"] = fid_sum
    save_state(run_dir / BEST_NAME, state)
    return (run_dir / BEST_NAME).read_bytes()


def _copy(result, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(result.run_dir, out)
    return out


def test_a_resumed_run_keeps_a_better_best(run, tmp_path):
    result, root = run
    out = _copy(result, tmp_path)
    before = _doctor_best(out, 0.0)  # no evaluation can beat an FID of 0
    resumed = train(_config(root / "data", out, max_steps=8, resume=True, tensorboard=False))
    assert [(r["step"], r["best"]) for r in resumed.evals] == [(8, False)]
    assert (out / BEST_NAME).read_bytes() == before
    assert (
        f"eval: best so far: FID sum 0.000 at step {load_checkpoint(out / BEST_NAME)['step']}"
        in (out / "train.log").read_text()
    )


def test_a_failed_best_write_leaves_the_previous_best_whole(run, tmp_path, monkeypatch):
    """The write of an improved best fails midway (a full disk): the run stops with one line, the
    previous best file is untouched and no partial file is left."""
    result, root = run
    out = _copy(result, tmp_path)
    before = _doctor_best(out, 1e9)  # the next evaluation improves on it
    save = torch.save

    def half_then_full_disk(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        if BEST_NAME in str(f):
            with open(f, "r+b") as fh:
                fh.truncate(fh.seek(0, 2) // 2)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full_disk)
    cfg = _config(root / "data", out, max_steps=8, resume=True, tensorboard=False)
    with pytest.raises(
        UserError, match=rf"could not write .*{BEST_NAME} \(No space left on device\); the prev"
    ):
        train(cfg)
    assert (out / BEST_NAME).read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(f".{BEST_NAME}")]
    assert load_checkpoint(out / CHECKPOINT_NAME)["step"] == 6  # the failed step saved nothing


def test_the_plot_draws_each_directions_fid(run, tmp_path):
    result, _ = run
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    fid = next(series for title, series, _ in panels(rows) if title.startswith("FID"))
    assert [(name, steps, values) for name, _, steps, values in fid] == [
        (f"FID {d}", EVAL_STEPS, [r["eval"][d]["fid"] for r in _evals(result.run_dir)])
        for d in ("AtoB", "BtoA")
    ]
    from PIL import Image

    with Image.open(plot_run(result.run_dir, tmp_path / "curves.png")) as img:
        for colour in FID_COLORS.values():
            assert _colour_count(img, colour) > 300, colour  # a curve, not a legend swatch alone


@pytest.mark.parametrize(
    "value,parsed",
    [("0", (0, "step")), ("500", (500, "step")), ("2ep", (2, "epoch")), (" 3ep ", (3, "epoch"))],
)
def test_eval_every_reads_steps_or_epochs(value, parsed):
    assert parse_eval_every(value) == parsed


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"eval_every": "-5"}, r"--eval-every '-5' is neither a number of steps \(e.g. 500\) nor of epochs"),
        ({"eval_every": "2 epochs"}, r"--eval-every '2 epochs' is neither"),
        ({"eval_every": "1.5ep"}, r"--eval-every '1.5ep' is neither"),
        ({"eval_every": "ep"}, r"--eval-every 'ep' is neither"),
        (
            {"eval_images": 1},
            r"--eval-images must be at least 2 \(FID and KID need 2 images per set\), got 1",
        ),
    ],
)
def test_bad_eval_options_are_one_line(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(tiny(**overrides))


def test_the_command_line_refuses_eval_for_dcgan(capsys, tmp_path):
    argv = [
        "train",
        "--model",
        "dcgan",
        "--data",
        str(tmp_path),
        "--eval-every",
        "100",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0 and "--eval-every measures translations of held-out images; --model dcgan" in err
    )


def test_eval_due_counts_steps_or_epochs_and_takes_the_last_step():
    steps = [s for s in range(1, 11) if eval_due((3, "step"), s, (s - 1) // 4, s % 4 == 0, 10)]
    assert steps == [3, 6, 9, 10]
    epochs = [s for s in range(1, 21) if eval_due((2, "epoch"), s, (s - 1) // 4, s % 4 == 0, 18)]
    assert epochs == [8, 16, 18]  # the ends of epochs 2 and 4, and the last step
    assert not any(eval_due((0, "step"), s, 0, True, 10) for s in range(1, 11))


def test_without_test_folders_a_slice_is_held_out_of_training(tmp_path):
    """CycleGAN: the last tenth of trainA and of trainB (at most --eval-images), removed from what the
    loader reads; pix2pix: the last tenth of the pairs, or test/'s halves when it has them."""
    write_images(tmp_path / "trainA", 30, size=(8, 8), seed=1)
    write_images(tmp_path / "trainB", 20, size=(8, 8), seed=2)
    scans = [scan_domain(tmp_path, d) for d in ("trainA", "trainB")]
    kept, held = cycle_held_out(tiny(eval_every="1"), tmp_path, scans)
    assert [len(s.images) for s in kept] == [27, 18]
    A, B = (s.inputs for s in held.sets)
    assert [p.name for p, _ in A] == ["img_027.png", "img_028.png", "img_029.png"] and len(B) == 2
    assert held.sets[1].reals == A and "kept out of training" in held.where
    assert not {p for p, _ in A} & {f.path for f in kept[0].images}
    kept, held = cycle_held_out(tiny(eval_every="1", eval_images=2), tmp_path, scans)
    assert [len(s.images) for s in kept] == [28, 18]
    with pytest.raises(UserError, match="trainB has 19 image"):
        cycle_held_out(tiny(eval_every="1"), tmp_path, [scans[0], scan_domain(tmp_path, "trainB", 19)])

    from fastcycle.config import apply_overrides
    from fastcycle.data.aligned import find_pairs
    from fastcycle.presets import pix2pix

    pairs = write_pix2pix(tmp_path / "p2p", 20, 8)
    cfg = apply_overrides(pix2pix(), {"eval_every": "1", "direction": "BtoA"})
    files, held = paired_held_out(cfg, pairs, find_pairs(pairs))
    (s,) = held.sets
    assert len(files.pairs) == 18 and s.direction == "BtoA" and [h for _, h in s.inputs] == ["right"] * 2
    write_images(pairs / "test", 3, size=(16, 8))
    files, held = paired_held_out(cfg, pairs, find_pairs(pairs))
    assert len(files.pairs) == 20 and held.where == "test/ (3 A|B pairs)"
    assert [h for _, h in held.sets[0].reals] == ["left"] * 3  # BtoA: the left halves are the targets


def test_a_pix2pix_run_is_measured_on_test_halves(root, tmp_path):
    """pix2pix: one direction, G(test/ left halves) against the right halves, read at the pairs' split."""
    from fastcycle.config import apply_overrides
    from fastcycle.presets import pix2pix

    data = write_pix2pix(tmp_path / "p2p", 4, 32)
    write_pix2pix(data, 2, 32, seed=1, split="test")
    small = dict(netG="resnet_6blocks", ngf=8, ndf=4, netD="n_layers", n_layers_D=2, load_size=36)
    small |= dict(crop_size=32, batch_size=2, max_steps=2, num_workers=0, sample_every=0, log_every=1)
    cfg = apply_overrides(
        pix2pix(), {**small, "data": str(data), "out": str(tmp_path / "run"), "eval_every": "2"}
    )
    (record,) = train(cfg).evals
    assert set(record["eval"]) == {"AtoB"} and record["fid_sum"] == record["eval"]["AtoB"]["fid"]
    halves = np.stack(list(read_images(list_images(data / "test"))))  # (2, 32, 64, 3): A | B
    G = read_generator_file(tmp_path / "run" / BEST_NAME).generator("AtoB")
    with torch.no_grad():
        x = torch.from_numpy(halves[:, :, :32]).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1
        fake = ((G(x).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    net = load_inception()
    q = compare(inception_features(list(fake), net), inception_features(list(halves[:, :, 32:]), net))
    assert q.fid == pytest.approx(record["eval"]["AtoB"]["fid"], rel=1e-6)  # as above: the same pixels
