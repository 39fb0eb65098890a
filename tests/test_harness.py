"""The benchmark harness's arithmetic and record: counted FLOPs, results files, the live MFU."""

import json
from types import SimpleNamespace

import pytest
import torch

from benchmarks import results
from fastcycle.config import apply_overrides
from fastcycle.presets import cyclegan
from fastcycle.train import flops as flops_module
from fastcycle.train import train
from fastcycle.train.flops import step_flops
from tests.test_train import tiny


def test_step_flops_match_the_design_arithmetic():
    # docs/ARCHITECTURE.md: ~1.88 TFLOP per image pair at 256x256, resnet_9blocks, identity loss on.
    assert step_flops(cyclegan()) == pytest.approx(1.88e12, rel=0.005)
    # Identity off drops two of the six generator passes (each forward + backward, 3 forward-costs):
    # 12 of 18 generator units remain, beside about one unit of discriminator work.
    no_idt = step_flops(apply_overrides(cyclegan(), {"lambda_identity": 0.0}))
    assert 0.65 < no_idt / step_flops(cyclegan()) < 0.72
    # Convolutions scale with pixels: half the side, a quarter of the FLOPs (the PatchGAN's edges aside).
    half = step_flops(apply_overrides(cyclegan(), {"crop_size": 128}))
    assert half / step_flops(cyclegan()) == pytest.approx(0.25, rel=0.02)


def _bench(name, data, extra, params=None):
    stats = SimpleNamespace(data=data, median=sorted(data)[len(data) // 2])
    return SimpleNamespace(
        name=name, fullname=f"benchmarks/bench_x.py::{name}", params=params, stats=stats, extra_info=extra
    )


def test_results_file_has_the_schema_and_a_gpu_dated_name(tmp_path):
    benches = [
        _bench("test_a[ref]", [0.2, 0.1, 0.3], {"pairs_per_s": 10.0, "mfu": 0.1}, {"case": "reference"}),
        _bench("test_b", [0.5], {"images_per_s": 4.0}),
        SimpleNamespace(name="disabled", stats=None),  # --benchmark-disable leaves no stats
    ]
    env = {"gpu": "NVIDIA H100 80GB HBM3", "git_sha": "abc1234"}
    path = results.write_results(benches, env, tmp_path)
    assert (
        path.parent == tmp_path
        and path.name.startswith("h100-80gb-hbm3-")
        and path.name.endswith("-abc1234.json")
    )
    record = results.load_results(path)
    assert record["schema"] == 1 and record["env"] == env and len(record["cases"]) == 2
    a, b = record["cases"]
    assert a["file"] == "bench_x.py" and a["params"] == {"case": "reference"}
    assert a["timings_s"] == {"median": 0.2, "p10": 0.1, "p90": 0.3, "rounds": 3}
    assert a["pairs_per_s"] == 10.0 and a["mfu"] == 0.1 and a["peak_memory_bytes"] is None
    assert b["images_per_s"] == 4.0 and "pairs_per_s" not in b
    path.write_text(json.dumps({**record, "schema": 0}))
    with pytest.raises(ValueError, match="schema 0, expected 1"):
        results.load_results(path)


def test_training_logs_mfu_where_a_peak_is_known(dataset, tmp_path, monkeypatch):
    # CPUs have no peak to quote (peak_flops is None there); pretend this one has 1 TFLOP/s.
    monkeypatch.setattr(flops_module, "peak_flops", lambda device: 1e12)
    monkeypatch.setattr("fastcycle.train.metrics.peak_flops", lambda device: 1e12)
    cfg = tiny(data=str(dataset), out=str(tmp_path / "run"), max_steps=2)
    lines = train(cfg).losses
    per_pair = step_flops(cfg)
    for line in lines:
        assert line["mfu"] == pytest.approx(line["pairs_per_s"] * per_pair / 1e12, abs=1e-4)
    assert flops_module.PEAK_BF16["H100"] == 790e12


def test_peak_flops_is_looked_up_by_the_gpu_that_ran():
    # Names as torch.cuda.get_device_name gives them; words of the name, not substrings, pick the kind.
    assert flops_module.peak_flops_of("NVIDIA H200") == 790e12
    assert flops_module.peak_flops_of("NVIDIA H100 80GB HBM3") == 790e12
    assert flops_module.peak_flops_of("NVIDIA A100-SXM4-80GB") == 312e12
    assert flops_module.peak_flops_of("NVIDIA L4") == 121e12
    assert flops_module.peak_flops_of("NVIDIA L40S") == 362e12
    assert flops_module.peak_flops_of("NVIDIA A10") is None  # not an A100: no peak, so MFU is null
    assert flops_module.peak_flops_of("NVIDIA GeForce RTX 4090") is None
    assert flops_module.peak_flops(torch.device("cpu")) is None
