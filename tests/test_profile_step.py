"""benchmarks/profile_step.py: kernel-name classification and the step's time split, on made-up
intervals (exact arithmetic), then one real profile of a tiny CPU step."""

import re

import pytest

from benchmarks import profile_step, results
from benchmarks.profile_step import Kernel, category, render, summarize, union_us


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # CUDA kernels as torch.profiler names them on Hopper: cuDNN, CUTLASS, cuBLAS
        (
            "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64",
            "convolutions",
        ),
        ("sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolutions"),
        ("cutlass3x_sm90_tensorop_s64x128x16gemm_bf16_bf16_f32_void_bf16_128x128x64_1x1x1", "convolutions"),
        ("void cudnn::winograd_nonfused::winogradForwardData4x4<float, float>", "convolutions"),
        ("void splitKreduce_kernel<32, 16, int, float, float, float, float, true, false>", "convolutions"),
        ("_reflect_conv_fwd", "convolutions"),  # fastcycle's fused pad+conv
        ("triton_tem_fused_convolution_0", "convolutions"),  # an inductor max-autotune template
        ("void at::native::batch_norm_collect_statistics_channels_last_kernel<float>", "norms"),
        ("cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512, true, 1, false>", "norms"),
        ("partial_stats", "norms"),  # fastcycle's instance norm
        ("backward_partials", "norms"),
        ("triton_red_fused__native_batch_norm_legit_functional_relu_3", "norms"),
        ("triton_poi_fused_add_convolution_relu_4", "elementwise"),  # a conv's bias epilogue, not a conv
        ("void at::native::vectorized_elementwise_kernel<4, at::native::AbsFunctor<float>>", "elementwise"),
        (
            "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, MeanOps<float>>>",
            "elementwise",
        ),
        ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", "optimizer"),
        ("Memcpy DtoD (Device -> Device)", "copies"),
        ("Memset (Device)", "copies"),
        ("void cudnn::ops::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, false>", "copies"),
        ("void at::native::reflection_pad2d_out_kernel<c10::BFloat16>", "copies"),
        ("void at::native::elementwise_kernel<128, 2, direct_copy_kernel_cuda>", "copies"),
        # CPU ops, standing in for kernels on a CPU
        ("aten::mkldnn_convolution", "convolutions"),
        ("aten::slow_conv_transpose2d", "convolutions"),
        ("aten::native_batch_norm_backward", "norms"),
        ("aten::_fused_adam_", "optimizer"),
        ("aten::reflection_pad2d", "copies"),
        ("aten::_to_copy", "copies"),
        ("aten::threshold_backward", "elementwise"),
        ("aten::empty_strided", "other"),
    ],
)
def test_category_from_the_name(name, expected):
    assert category(name) == expected


def test_union_counts_overlaps_and_nesting_once():
    assert union_us([]) == 0.0
    assert (
        union_us([Kernel("a", 0, 10), Kernel("b", 5, 20), Kernel("c", 50, 60), Kernel("d", 52, 55)]) == 30.0
    )


def test_summary_splits_the_wall_time_per_step():
    # Two steps in 200 us: a conv overlapping a norm on another stream, a copy, 150 us without a kernel.
    kernels = [
        Kernel("sm90_xmma_fprop_implicit_gemm", 0, 10),
        Kernel("triton_red_fused__native_batch_norm_legit_functional_0", 5, 20),
        Kernel("Memcpy DtoD (Device -> Device)", 100, 120),
        Kernel("sm90_xmma_fprop_implicit_gemm", 130, 140),
    ]
    s = summarize(kernels, wall_us=200.0, steps=2, top=2)
    assert s["wall_ms"] == pytest.approx(0.1) and s["busy_ms"] == pytest.approx(0.025)
    assert s["idle_ms"] == pytest.approx(0.075)
    assert s["categories"] == pytest.approx(
        {"convolutions": 0.01, "norms": 0.0075, "elementwise": 0, "optimizer": 0, "copies": 0.01, "other": 0}
    )
    # Ranked by total time; ties by name. The conv ran once per step, 10 us each.
    assert [(k["name"][:6], k["calls"], k["ms"]) for k in s["top"]] == [
        ("Memcpy", 0.5, pytest.approx(0.01)),
        ("sm90_x", 1.0, pytest.approx(0.01)),
    ]
    text = render(s, "t")
    assert "| idle | 0.075 | 75.0% |" in text and "| convolutions | 0.010 | 10.0% |" in text
    assert "overlap" in text  # 27.5 us of kernels per step in 25 us busy: said so, not hidden
    # CPU ops nest: a parent with 30 us of its own inside 0-100, a child with the other 70.
    cpu = summarize(
        [Kernel("aten::conv2d", 0, 100, 30.0), Kernel("aten::mkldnn_convolution", 10, 80, 70.0)], 100, 1
    )
    assert cpu["busy_ms"] == pytest.approx(0.1) and cpu["idle_ms"] == 0
    assert cpu["categories"]["convolutions"] == pytest.approx(0.1)
    assert "overlap" not in render(cpu, "t")


def test_fastest_case_of_a_results_file(tmp_path):
    from types import SimpleNamespace

    def bench(case, pairs_per_s, test="test_train_step"):
        return SimpleNamespace(
            name=f"{test}[{case}]",
            fullname=f"benchmarks/bench_train_step.py::{test}[{case}]",
            params={},
            stats=SimpleNamespace(data=[0.1], median=0.1),
            extra_info={"case": case, "pairs_per_s": pairs_per_s},
        )

    family = bench("pix2pix_unet256_b16", 900.0, "test_family_step")  # another model: never the best step
    path = results.write_results(
        [bench("reference", 20.0), bench("best-b8", 210.0), family], {"gpu": "x"}, tmp_path
    )
    assert profile_step.fastest_case(path) == "best-b8"
    empty = results.write_results([], {"gpu": "y"}, tmp_path)
    assert profile_step.fastest_case(empty) is None


def test_a_real_cpu_step_profile(tmp_path, capsys):
    out = tmp_path / "profile.md"
    assert (
        profile_step.main(["--case", "channels_last", "--steps", "1", "--warmup", "1", "--out", str(out)])
        == 0
    )
    text = out.read_text()
    assert text.strip() == capsys.readouterr().out.strip()
    assert text.startswith("**channels_last (batch 1, 32x32, kernels torch) on none")
    parts = [  # (part, ms per step, share of wall in %), in the table's order
        (cells[0], float(cells[1]), float(cells[2].rstrip("%")))
        for cells in (row.strip("| ").split(" | ") for row in text.splitlines())
        if len(cells) == 3 and not cells[0].startswith(("part", "-"))
    ]
    assert [name for name, _, _ in parts] == [*profile_step.CATEGORIES, "idle"]
    wall, busy = map(float, re.search(r"wall ([\d.]+) ms .*, kernels busy ([\d.]+) ms", text).groups())
    ms = {name: value for name, value, _ in parts}
    # Every ms figure is rounded to 0.001: each sum below holds within half of that per term.
    assert busy + ms["idle"] == pytest.approx(wall, abs=3 * 0.0005)
    # CPU ops nest, so no two overlap (no note says so) and their self times add up to busy.
    assert "overlap" not in text and sum(ms.values()) - ms["idle"] == pytest.approx(busy, abs=7 * 0.0005)
    for name, value, share in parts:  # shares are rounded to 0.1%; the ms' rounding adds < 0.001%
        assert share == pytest.approx(100 * value / wall, abs=0.051), name
    # A CycleGAN step spends time in convs, norms, the optimizer and copies (reflection pads, bf16 casts):
    # each shows at the table's precision, and convs and norms, measured at 70% of busy, exceed a third.
    assert all(ms[c] >= wall * 0.001 for c in ("convolutions", "norms", "optimizer", "copies")), ms
    assert ms["convolutions"] + ms["norms"] > busy / 3, ms
    top = re.findall(r"^\| `.*` \| (\w+) \| [\d.]+ \| ([\d.]+) \| [\d.]+% \|$", text, flags=re.M)
    assert len(top) == 20  # the top 20, slowest first, each category's within its total
    assert [float(t) for _, t in top] == sorted((float(t) for _, t in top), reverse=True)
    for name in profile_step.CATEGORIES:
        assert sum(float(t) for c, t in top if c == name) <= ms[name] + 21 * 0.0005, name
