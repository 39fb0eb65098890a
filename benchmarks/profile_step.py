"""Where one training step's time goes: torch.profiler over a bench_train_step case, as one table.

    python -m benchmarks.profile_step                               # best-b8
    python -m benchmarks.profile_step --results FILE --out profile.md   # the fastest case in FILE
    python -m benchmarks.profile_step --case channels_last --steps 2    # any case of bench_train_step.py

The case is built as bench_train_step.py builds it (256x256 on a GPU, its tiny smoke sizes on a CPU),
warmed up (compilation, CUDA-graph capture, cuDNN autotuning) and profiled over --steps iterations.
The table splits the step's wall time into convolutions, norms, elementwise (pointwise and
reductions), optimizer, copies (memcpy, memset, layout transposes, padding, casts), other, and idle:
the wall time minus the union of kernel intervals (launch gaps, host work the GPU waits for). Then
the top 20 kernels by time. On a GPU the kernels are what CUDA ran (kernels, memcpys, memsets); on a
CPU, where there are none, the CPU ops stand in, each with its self time (the time spent in none of
the ops it calls), and idle is then the host's Python between ops.
Categories come from the names alone (`category`); the wall time runs from the first step's start on
the host to the end of its last kernel.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

STEP = "fastcycle_train_step"  # the record_function label around each profiled step
CATEGORIES = ("convolutions", "norms", "elementwise", "optimizer", "copies", "other")
_OPTIMIZER = re.compile(r"adam|multi_tensor|foreach")
# torch's and Inductor's norm kernels, and ours (kernels/instance_norm_kernels.py, named as defined there)
_NORMS = re.compile(r"norm|welford|bn_fw|bn_bw|partial_stats|plane_stats|backward_partials|backward_dx")
_CONVS = re.compile(r"conv(?!ert)|gemm|xmma|cutlass|wgrad|dgrad|fprop|splitk|winograd|\b(add|b)?mm\b|matmul")
_COPIES = re.compile(
    r"memcpy|memset|copy|nchwtonhwc|nhwctonchw|transpose|permute|contiguous|clone|_pad|\bcat\b|fill|zero_"
)
_ELEMENTWISE = re.compile(
    r"elementwise|reduce|add|mul|div|sub|relu|tanh|threshold|where|abs|pow|sqrt|neg|exp|mean|sum|sigmoid"
    r"|clamp|loss|sign|max|min|lerp|rand"
)


def category(name: str) -> str:
    """One of CATEGORIES for a CUDA kernel, memcpy/memset or CPU op name."""
    n = name.lower()
    if _OPTIMIZER.search(n):
        return "optimizer"
    if n.startswith("triton_"):  # inductor's kernels: op names fused into one, e.g. a conv's bias add
        if n.startswith("triton_tem"):  # a max-autotune GEMM/conv template
            return "convolutions"
        return "norms" if _NORMS.search(n) else "elementwise"
    for label, pattern in (
        ("norms", _NORMS),
        ("convolutions", _CONVS),
        ("copies", _COPIES),
        ("elementwise", _ELEMENTWISE),
    ):
        if pattern.search(n):
            return label
    return "other"


@dataclass(frozen=True)
class Kernel:
    """One piece of work: a CUDA kernel, or on a CPU an op's self time (the time in none of its children)."""

    name: str
    start_us: float
    end_us: float
    self_us: float | None = None  # None: the whole interval is its own work (a kernel)

    @property
    def work_us(self) -> float:
        return self.end_us - self.start_us if self.self_us is None else self.self_us


def union_us(kernels: list[Kernel]) -> float:
    """Microseconds during which at least one kernel ran (overlapping streams, nested ops count once)."""
    total, end = 0.0, float("-inf")
    for k in sorted(kernels, key=lambda k: k.start_us):
        if k.end_us > end:
            total += k.end_us - max(k.start_us, end)
            end = k.end_us
    return total


def summarize(kernels: list[Kernel], wall_us: float, steps: int, top: int = 20) -> dict:
    """Per-step milliseconds: by category, idle, and the `top` kernels by total time."""
    by_category = dict.fromkeys(CATEGORIES, 0.0)
    by_name: dict[str, list[float]] = {}
    for k in kernels:
        by_category[category(k.name)] += k.work_us
        by_name.setdefault(k.name, []).append(k.work_us)
    busy = union_us(kernels)
    ranked = sorted(by_name.items(), key=lambda item: (-sum(item[1]), item[0]))[:top]
    per_step = 1e-3 / steps  # us over all steps -> ms per step
    return {
        "steps": steps,
        "wall_ms": wall_us * per_step,
        "busy_ms": busy * per_step,
        "idle_ms": max(wall_us - busy, 0.0) * per_step,
        "categories": {c: us * per_step for c, us in by_category.items()},
        "top": [
            {"name": n, "ms": sum(d) * per_step, "calls": len(d) / steps, "category": category(n)}
            for n, d in ranked
        ],
    }


def render(summary: dict, title: str) -> str:
    wall = summary["wall_ms"] or float("nan")
    rows = [*summary["categories"].items(), ("idle", summary["idle_ms"])]
    lines = [
        f"**{title}**",
        "",
        f"wall {summary['wall_ms']:.3f} ms per step (mean of {summary['steps']}), "
        f"kernels busy {summary['busy_ms']:.3f} ms",
        "",
        "| part of the step | ms per step | share of wall |",
        "|---|--:|--:|",
        *(f"| {name} | {ms:.3f} | {100 * ms / wall:.1f}% |" for name, ms in rows),
    ]
    if sum(summary["categories"].values()) > summary["busy_ms"] * 1.001:
        lines.append("\n(kernels on concurrent streams overlap: the categories add up to more than busy)")
    lines += ["", "| top kernels by time | category | calls per step | ms per step | share of wall |"]
    lines.append("|---|---|--:|--:|--:|")
    for k in summary["top"]:
        name = k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "..."
        name = name.replace("|", "\\|")
        share = 100 * k["ms"] / wall
        lines.append(f"| `{name}` | {k['category']} | {k['calls']:g} | {k['ms']:.3f} | {share:.1f}% |")
    return "\n".join(lines)


def fastest_case(path: str | Path) -> str | None:
    """The bench_train_step case with the most pairs/s in a results file, or None."""
    from benchmarks.results import load_results

    cases = [
        c
        for c in load_results(path)["cases"]
        if c.get("file") == "bench_train_step.py"
        and c.get("name", "").startswith("test_train_step[")  # not the other families' steps
        and c.get("pairs_per_s")
        and "case" in c.get("extra", {})
    ]
    return max(cases, key=lambda c: c["pairs_per_s"])["extra"]["case"] if cases else None


def profile(name: str, steps: int, warmup: int) -> tuple[list[Kernel], float, dict]:
    """Profile `steps` iterations of a bench_train_step case: (kernels, wall us, the case's facts)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, record_function

    from benchmarks.bench_train_step import CASES, SIZE, build_case
    from benchmarks.conftest import DEVICE, synchronize

    case = next((c for c in CASES if c[0] == name), None)
    if case is None:
        raise SystemExit(f"profile_step: error: no case {name!r}; pick one of {[c[0] for c in CASES]}")
    torch.backends.cudnn.benchmark = True  # as the benchmark sets it
    model, cfg = build_case(case)
    batch = case[1]
    layout = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
    real_A, real_B = (
        (torch.rand(batch, 3, SIZE, SIZE, device=DEVICE) * 2 - 1).contiguous(memory_format=layout)
        for _ in range(2)
    )
    for _ in range(warmup):  # compilation, CUDA-graph capture, cuDNN autotuning, allocator warm-up
        model.train_step(real_A, real_B)
    synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function(STEP):
                model.train_step(real_A, real_B)
        synchronize()
    events = list(prof.events())
    marks = [e for e in events if e.name == STEP and e.device_type == DeviceType.CPU]
    on_device = DEVICE.type == "cuda"
    ops = [e for e in events if e.name != STEP and not getattr(e, "is_user_annotation", False)]
    if on_device:
        kernels = [
            Kernel(e.name, e.time_range.start, e.time_range.end)
            for e in ops
            if e.device_type == DeviceType.CUDA
        ]
    else:  # ops nest: each counts its self time, and the union of their intervals is the busy time
        kernels = [
            Kernel(e.name, e.time_range.start, e.time_range.end, e.self_cpu_time_total)
            for e in ops
            if e.device_type == DeviceType.CPU and not e.name.startswith("[")
        ]
    start = min(m.time_range.start for m in marks)
    end = max([m.time_range.end for m in marks] + [k.end_us for k in kernels])
    facts = {"case": name, "batch": batch, "size": SIZE, "device": str(DEVICE), "kernels": case[5]}
    facts["gpu"] = torch.cuda.get_device_name() if on_device else "none (CPU ops stand in for kernels)"
    return kernels, end - start, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    parser.add_argument("--case", default="best-b8", help="a bench_train_step.py case (default best-b8)")
    parser.add_argument("--results", metavar="FILE", help="profile the fastest training case in FILE")
    parser.add_argument("--steps", type=int, default=5, help="profiled iterations (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="iterations before profiling (default 3)")
    parser.add_argument("--out", metavar="PATH", help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    name = args.case
    if args.results:
        try:
            name = fastest_case(args.results) or name
        except (OSError, ValueError) as e:
            print(f"profile_step: {args.results}: {e}; profiling {name}", file=sys.stderr)
    kernels, wall_us, facts = profile(name, args.steps, args.warmup)
    summary = summarize(kernels, wall_us, args.steps)
    pairs_per_s = facts["batch"] * 1e3 / summary["wall_ms"]
    title = (
        f"{facts['case']} (batch {facts['batch']}, {facts['size']}x{facts['size']}, kernels "
        f"{facts['kernels']}) on {facts['gpu']}: {pairs_per_s:.1f} pairs/s under the profiler"
    )
    text = render(summary, title)
    print(text)
    if args.out:
        from fastcycle.atomic import write_atomic

        write_atomic(Path(args.out), lambda tmp: tmp.write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
