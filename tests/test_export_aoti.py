"""AOTInductor export: the package matches eager PyTorch, H and W can be dynamic, a failed export keeps
the old package, and every bad input is a one-line UserError.

Each AOTI export compiles C++ (~20-30 s on two CPU cores for this tiny generator), so the two packages are
built once per module and shared.
"""

import shutil
import zipfile
from types import SimpleNamespace

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

from fastcycle.errors import UserError
from fastcycle.export.aoti import AotiRunner, export_aoti
from fastcycle.models import ResnetGenerator, init_weights
from tests.tolerance import network_atol

CPU = torch.device("cpu")
MAX_BATCH = 8


def _random(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1  # (N, 3, H, W) in [-1, 1]


def _export(tmp_path_factory, **kw) -> SimpleNamespace:
    torch.manual_seed(0)
    # The real generator with one residual block instead of 6 or 9 (the blocks repeat the same ops; each
    # one costs seconds of C++ compile). With dropout, a package traced in train mode would differ from
    # eager eval far beyond the tolerance.
    net = init_weights(
        ResnetGenerator(3, 3, ngf=4, norm="instance", dropout=True, n_blocks=1), "normal", 0.02
    )
    net.train()
    path = tmp_path_factory.mktemp("aoti") / "G_AB.pt2"
    # A batch-1 example: export_aoti must not let torch.export specialise the batch to 1. Vectorised C++,
    # as a CPU deployment builds it (tests/conftest.py turns SIMD off for the suite's other compiles).
    with inductor_config.patch({"cpp.vec_isa_ok": None}):
        out = export_aoti(net, path, example=torch.zeros(1, 3, 32, 32), max_batch=MAX_BATCH, **kw)
    return SimpleNamespace(path=out, net=net, training_after=net.training)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return _export(tmp_path_factory)


@pytest.fixture(scope="module")
def package_hw(tmp_path_factory):
    return _export(tmp_path_factory, dynamic_hw=True)


def _one_line_user_error(fn, match: str) -> str:
    with pytest.raises(UserError, match=match) as e:
        fn()
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


def _assert_matches_eager(runner, net, x) -> None:
    """The runner gives eager's outputs for x and for x in channels-last layout (the compiled kernels
    assume NCHW strides and do not check them, so the runner must hand them a contiguous batch).
    Both sides fp32: AOTI's C++ kernels only reorder the convs' and norms' float sums
    (tests/tolerance.py); dropout left on or a misread layout is off by more than 1e-2."""
    with torch.no_grad():
        want = net.eval()(x)
    tol = network_atol(net, x)
    for xi in (x, x.to(memory_format=torch.channels_last)):
        got = runner(xi)
        assert got.shape == x.shape and got.dtype == torch.float32 and got.device == CPU
        torch.testing.assert_close(got, want, atol=tol, rtol=0, msg=lambda m: f"{tuple(x.shape)}: {m}")


def test_round_trip_matches_eager_for_any_batch_up_to_max(package):
    assert package.path.name == "G_AB.pt2" and package.training_after  # the caller's mode comes back
    runner = AotiRunner(package.path, CPU)
    assert runner.name == "aoti" and runner.device == CPU and runner.max_batch == MAX_BATCH
    assert "G_AB.pt2" in runner.note and "cpu" in runner.note
    for n in (1, 3, 8):
        _assert_matches_eager(runner, package.net, _random(n, 32, 32, seed=n))


def test_out_of_contract_inputs_are_user_errors(package):
    runner = AotiRunner(package.path, CPU)
    # AOTI itself runs a batch over its max without complaint, and a 48x40 batch through a 32x32
    # package returns 32x32 garbage: the runner must refuse both.
    _one_line_user_error(lambda: runner(_random(9, 32, 32)), r"at most 8; .*re-export with a larger --batch")
    _one_line_user_error(
        lambda: runner(_random(2, 48, 40)), r"exported for 32x32 images, got 48x40;.*--dynamic-hw"
    )
    _one_line_user_error(lambda: runner(torch.zeros(2, 1, 32, 32)), r"takes \(N, 3, H, W\)")


def test_package_for_another_device_is_a_user_error(package):
    msg = _one_line_user_error(
        lambda: AotiRunner(package.path, torch.device("cuda")), "compiled for cpu, not cuda"
    )
    assert "--device cuda" in msg


def test_dynamic_hw_runs_other_sizes(package_hw):
    runner = AotiRunner(package_hw.path, CPU)
    assert runner.hw is None and "any HxW" in runner.note
    for n, h, w in ((3, 32, 32), (2, 48, 40), (1, 16, 64)):
        _assert_matches_eager(runner, package_hw.net, _random(n, h, w, seed=h + w))
    _one_line_user_error(lambda: runner(_random(1, 50, 40)), r"multiples of 4 .* got 50x40")


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("broken generator")


def test_failed_export_keeps_the_old_package(package, tmp_path, monkeypatch):
    path = tmp_path / "G_AB.pt2"
    shutil.copyfile(package.path, path)
    good = path.read_bytes()
    x = torch.zeros(1, 3, 32, 32)
    # Fails while tracing, before anything is written.
    with pytest.raises(RuntimeError, match="broken generator"):
        export_aoti(_Broken(), path, example=x)
    assert path.read_bytes() == good and list(tmp_path.iterdir()) == [path]

    # Fails halfway through writing the package (a compiler error, a full disk, Ctrl-C).
    def half_write(program, package_path, inductor_configs):
        with open(package_path, "wb") as f:
            f.write(good[: len(good) // 2])
        raise RuntimeError("C++ compile failed")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", half_write)
    with pytest.raises(RuntimeError, match="C\\+\\+ compile failed"):
        export_aoti(package.net, path, example=x, max_batch=MAX_BATCH)
    assert path.read_bytes() == good and list(tmp_path.iterdir()) == [path]  # no temporary file left
    _assert_matches_eager(AotiRunner(path, CPU), package.net, _random(2, 32, 32))


def test_missing_and_foreign_files_are_user_errors(tmp_path):
    missing = tmp_path / "missing.pt2"
    _one_line_user_error(lambda: AotiRunner(missing, CPU), "missing.pt2 does not exist; export one with")
    text = tmp_path / "notes.pt2"
    text.write_text("not a package")
    _one_line_user_error(lambda: AotiRunner(text, CPU), "notes.pt2 is not an AOTInductor package")
    other = tmp_path / "other.pt2"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("other/data.txt", "a zip, but no compiled model")
    _one_line_user_error(
        lambda: AotiRunner(other, CPU), "other.pt2 is a zip file but not an AOTInductor package"
    )
