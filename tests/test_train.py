"""The training step and loop on CPU at tiny sizes."""

import json

import pytest
import torch

from fastcycle.checkpoint import load_checkpoint
from fastcycle.config import apply_overrides
from fastcycle.errors import UserError
from fastcycle.presets import cyclegan
from fastcycle.runtime import resolve_precision
from fastcycle.train import CycleGAN, train
from fastcycle.train.env import ModelEnv
from tests.tolerance import assert_close_in_net

CPU = torch.device("cpu")


def tiny(**overrides):
    """A CycleGAN small enough for a CPU unit test (about 20k parameters per generator)."""
    base = dict(
        netG="resnet_6blocks",
        ngf=4,
        ndf=4,
        netD="n_layers",
        n_layers_D=2,
        load_size=36,
        crop_size=32,
        batch_size=2,
        n_epochs=1,
        n_epochs_decay=1,
        log_every=1,
        num_workers=0,
        sample_every=0,
        save_every=1000,
        report_fid=False,  # the demo's FID/KID: ~5 s of Inception per run, tested in test_demo.py
    )
    return apply_overrides(cyclegan(), {**base, **overrides})


def model_env(device=CPU, amp=False, amp_dtype="auto", kernels="torch") -> ModelEnv:
    """Where a test builds its family (no run folder): the CPU in fp32 unless told otherwise."""
    return ModelEnv(device, resolve_precision(amp, amp_dtype, device), kernels)


def _batch(seed=0, n=2, size=32):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, size, size, generator=g) * 2 - 1 for _ in range(2)]


def _params(model):
    return torch.cat([p.detach().flatten().float() for net in model.nets.values() for p in net.parameters()])


@pytest.mark.parametrize("amp_dtype", ["auto", "bf16"])
@pytest.mark.parametrize("lambda_identity", [0.5, 0.0])
def test_step_updates_all_networks_with_finite_losses(amp_dtype, lambda_identity):
    cfg = tiny(lambda_identity=lambda_identity)
    model = CycleGAN(cfg, model_env(amp_dtype=amp_dtype))
    before = {k: [p.clone() for p in net.parameters()] for k, net in model.nets.items()}
    losses, _ = model.train_step(*_batch())
    expected = {"G_AB", "G_BA", "cycle_A", "cycle_B", "D_A", "D_B"} | (
        {"idt_A", "idt_B"} if lambda_identity else set()
    )
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    for k, net in model.nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters(), strict=True)), k


def test_concatenated_calls_equal_separate_calls():
    """The step batches G(real_A) with G(real_B): exact for instance norm, whose statistics are per image."""
    torch.manual_seed(0)
    cfg = tiny()
    model = CycleGAN(cfg, model_env())
    a, b = _batch()
    joint = model._calls("G_AB", a, b)
    with torch.no_grad():
        # Same fp32 conv on different batch sizes: only summation order may differ (tests/tolerance.py).
        G_AB = model.nets["G_AB"]
        assert_close_in_net(joint[0], G_AB(a), G_AB, a)
        assert_close_in_net(joint[1], G_AB(b), G_AB, b)
    assert not CycleGAN(tiny(norm="batch"), model_env()).concat_calls


def test_channels_last_step_matches_contiguous():
    torch.manual_seed(0)
    runs = []
    for cl in (False, True):
        model = CycleGAN(tiny(channels_last=cl), model_env())
        a, b = _batch()
        if cl:
            a, b = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
        runs.append([model.train_step(a, b)[0]["cycle_A"].item() for _ in range(3)])
    # Same math in another memory layout: only the conv algorithms' summation order differs.
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


def test_fp16_uses_a_grad_scaler():
    model = CycleGAN(tiny(), model_env(amp=True, amp_dtype="fp16"))
    assert model.scaler.is_enabled()
    losses, _ = model.train_step(*_batch())
    assert all(torch.isfinite(v) for v in losses.values())


def test_amp_on_a_cpu_without_native_bf16_says_fp32(monkeypatch):
    import fastcycle.runtime as rt

    monkeypatch.setattr(rt, "cpu_has_fast_bf16", lambda: False)
    p = rt.resolve_precision(True, "auto", CPU)
    assert p.dtype is None and "no native bf16" in p.note


def test_loop_writes_metrics_samples_and_checkpoint(dataset, tmp_path):
    out = tmp_path / "run"
    result = train(tiny(data=str(dataset), out=str(out), max_steps=4, sample_every=2))
    assert result.step == 4
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and all("pairs_per_s" in r for r in lines)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    state = load_checkpoint(out)
    assert state["step"] == 4 and set(state["model"]["nets"]) == {"G_AB", "G_BA", "D_A", "D_B"}
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(tiny(data=str(dataset), out=str(out), max_steps=4))


@pytest.mark.parametrize("loader", ["torch", "gpu-cache", "dali"])
def test_resume_continues_exactly(dataset, tmp_path, loader):
    """A run stopped at step 4 (mid-epoch 1) and resumed ends where an uninterrupted run ends."""
    common = dict(data=str(dataset), pool_size=2, ema_decay=0.9, n_epochs=1, n_epochs_decay=2, loader=loader)
    full = train(tiny(out=str(tmp_path / "full"), max_steps=7, **common))
    train(tiny(out=str(tmp_path / "split"), max_steps=4, **common))
    with (tmp_path / "split" / "metrics.jsonl").open("a") as f:  # logged after the last checkpoint
        f.write(json.dumps({"step": 5, "lost": True}) + "\n" + '{"step": 6, "G_A')  # then a crash
    resumed = train(tiny(out=str(tmp_path / "split"), max_steps=7, resume=True, **common))
    assert [r["step"] for r in resumed.losses] == [5, 6, 7]

    # Same ops in the same order on the same data: bitwise equal on CPU.
    def strip(lines):
        return [{k: v for k, v in r.items() if k != "pairs_per_s"} for r in lines]

    assert strip(resumed.losses) == strip(full.losses[4:])
    logged = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 8)) and "lost" not in logged[4]
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    for name in a["model"]["nets"]:
        for k, v in a["model"]["nets"][name].items():
            assert torch.equal(v, b["model"]["nets"][name][k]), (name, k)


def test_resume_refuses_a_changed_architecture(dataset, tmp_path):
    out = str(tmp_path / "run")
    train(tiny(data=str(dataset), out=out, max_steps=1))
    with pytest.raises(UserError, match="model options differ"):
        train(tiny(data=str(dataset), out=out, max_steps=2, resume=True, ngf=8))
