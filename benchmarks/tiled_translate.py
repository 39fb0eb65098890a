"""Tiled inference with whole-image statistics against the whole-image forward, on a real photograph.

    python -m benchmarks.tiled_translate                # 2048 and 4096, resnet_9blocks at ngf 16
    python -m benchmarks.tiled_translate --size 256 --big 0 --ngf 4   # what CI runs (tests/test_tiling.py)

The photograph is scikit-image's retina.jpg (1411 x 1411), resized with PIL's LANCZOS to --size (and
--big) pixels square. The generator has random weights drawn with the reference's init (normal, std
0.02; seed 0): the method's accuracy and memory do not depend on what the weights learned. Every run is
a fresh subprocess on the CPU, so that its peak resident set (VmHWM, reset after the model, the input and
a warm-up exist) is its own; "memory" below is that peak minus the resident set before the call, i.e.
what the forward itself takes, which is what --memory-limit bounds (those runs with a fixed mmap
threshold, see ALLOCATOR). Times come from separate runs with glibc's own allocator, whole and tiled
alternated, the best of ROUNDS each.

At --size: whole-image (fastcycle.runner.TorchRunner: fp32, channels-last), tiled (the limit: a
quarter of the whole-image run's memory) and naive tiles (the whole generator on each tile alone,
stitched: per-tile instance-norm statistics); each output's PSNR (outputs in [-1, 1], peak-to-peak 2)
against the whole-image forward of the modules themselves (fp32, NCHW). The channels-last runner is
timed and measured but is not the reference: torch's CPU group norm (InstanceNorm2d's fast path) on a
channels-last input sums in float32 (InstanceNorm2d takes a large plane's mean off first, so the sums do
not cancel, but their rounding over millions of pixels remains: 49 dB from the NCHW forward at 4096
px). At --big the same quarter-memory limit, whole against tiled, PSNR against the NCHW forward again.
Exit status 1 when a bound fails: tiled PSNR >= 40 dB, naive at least 10 dB worse, the tiled run's
memory within its limit (when the whole image takes 64 MiB or more), from 1024 px the tiled time <= 2x
the whole image's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PSNR_MIN, NAIVE_GAP, TIME_RATIO = 40.0, 10.0, 2.0
MEASURED = 64 * 2**20  # below this much the allocator's noise decides the peak
TIMED = 1024
ROUNDS = 2  # below this side a run takes well under a second and fixed costs decide the ratio


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(cfg: dict) -> dict:
    """One measured run in this (fresh) process: cfg['mode'] is whole, tiled or naive."""
    import torch

    from fastcycle.models import build_generator
    from fastcycle.runner import TorchRunner
    from fastcycle.tiling import TiledGenerator, program_from_module

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    net = build_generator(cfg["netG"], ngf=cfg["ngf"]).eval()
    x = torch.from_numpy(np.load(cfg["input"]))
    cpu = torch.device("cpu")
    if cfg["mode"] == "tiled":
        run = TiledGenerator(
            program_from_module(net), device=cpu, memory_limit=cfg["limit"], tile=cfg["tile"]
        )
    else:
        runner = TorchRunner(net, cpu)
        run = runner if cfg["mode"] == "whole" else lambda x: _naive(runner, x, cfg["tile"])
    m = net.spec.size_multiple
    run(torch.zeros(1, 3, 2 * m, 2 * m))  # warm-up: libraries loaded, kernels chosen
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    baseline = _rss("VmRSS")
    start = time.perf_counter()
    y = run(x)
    seconds = time.perf_counter() - start
    peak = _rss("VmHWM")
    if cfg["output"]:
        np.save(cfg["output"], y.numpy())
    if cfg.get("exact"):  # the reference, after the measurement: the modules in fp32, NCHW
        with torch.no_grad():
            np.save(cfg["exact"], net.to(memory_format=torch.contiguous_format)(x).numpy())
    note = getattr(run, "note", "")
    return {"seconds": seconds, "memory": peak - baseline, "peak": peak, "baseline": baseline, "note": note}


def _naive(runner, x, tile: int):
    """The whole generator on each tile alone (its own instance-norm statistics), stitched."""
    import torch

    out = torch.empty_like(x)
    for y in range(0, x.shape[2], tile):
        for z in range(0, x.shape[3], tile):
            out[:, :, y : y + tile, z : z + tile] = runner(x[:, :, y : y + tile, z : z + tile])
    return out


# glibc's adaptive mmap threshold lets freed tensors of up to 32 MiB stay resident in its heap, so a
# whole-image run's peak varied 100-224 MiB run to run (resnet_6blocks ngf 16, 1024 px); with a fixed
# 1 MiB threshold every large tensor is mapped and unmapped on its own and the peak is the tensors'
# (144 MiB, +-0.5%): the whole-image runs are measured so, at their smallest, which makes the quarter
# limit strict. The tiled runs keep glibc's own allocator, as users run them (their peak repeats to
# 1%: the executor trims the heap between segments).
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


def _spawn(cfg: dict, allocator: dict = ALLOCATOR) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.tiled_translate", "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env=os.environ | allocator,
    )
    if proc.returncode:
        raise SystemExit(f"child run {cfg['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def photograph(side: int, path: Path) -> None:
    """skimage's retina.jpg, LANCZOS-resized to side x side, as (1, 3, side, side) float32 in [-1, 1]."""
    import skimage
    from PIL import Image

    image = Image.open(Path(skimage.__file__).parent / "data" / "retina.jpg").convert("RGB")
    image = image.resize((side, side), Image.LANCZOS)
    arr = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
    np.save(path, np.ascontiguousarray(arr))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(2.0**2 / mse)


def compare(side: int, args, folder: Path, naive: bool) -> list[str]:
    """Runs at one size; prints the figures; returns the bounds that failed."""
    image = folder / f"in{side}.npy"
    photograph(side, image)
    base = {"netG": args.netG, "ngf": args.ngf, "input": str(image), "threads": args.threads, "tile": None}
    exact = str(folder / "exact.npy")
    whole = _spawn(
        base | {"mode": "whole", "output": str(folder / "whole.npy"), "limit": None, "exact": exact}
    )
    limit = whole["memory"] // 4
    checked = whole["memory"] >= MEASURED
    # Below MEASURED the limit means nothing (and is under the tile loop's fixed memory): quarter tiles.
    quarter = {"limit": None, "tile": max(4, side // 4)} if not checked else {"limit": limit}
    tiled = _spawn(base | {"mode": "tiled", "output": str(folder / "tiled.npy")} | quarter, allocator={})
    got, whole_out = np.load(folder / "tiled.npy"), np.load(folder / "whole.npy")
    want = np.load(exact)
    got_psnr = psnr(got, want)
    mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    print(f"{args.netG} ngf {args.ngf}, retina.jpg LANCZOS-resized to {side}x{side}, {args.threads} threads")
    for name, r in (("whole image", whole), ("tiled", tiled)):
        print(
            f"  {name + ':':12} memory {mib(r['memory'])} (peak RSS {mib(r['peak'])}), {r['seconds']:.2f} s"
        )
    checked = whole["memory"] >= MEASURED
    print(
        f"  tiled memory limit {mib(limit)}" + ("" if checked else f" (bound checked from {mib(MEASURED)})")
    )
    print(f"    {tiled['note']}")
    print(
        f"  PSNR vs the whole-image forward (fp32, NCHW): tiled {got_psnr:.1f} dB, whole-image "
        f"channels-last runner {psnr(whole_out, want):.1f} dB; tiled vs that runner "
        f"{psnr(got, whole_out):.1f} dB"
    )
    failed = []
    if got_psnr < PSNR_MIN:
        failed.append(f"{side}: tiled PSNR {got_psnr:.1f} < {PSNR_MIN} dB")
    if tiled["memory"] > limit and checked:
        failed.append(f"{side}: tiled memory {mib(tiled['memory'])} over its limit {mib(limit)}")
    tile = int(tiled["note"].split("tiles of ")[1].split(" px")[0])
    if naive:
        # Times with glibc's own allocator (as users run), whole and tiled alternated ROUNDS times, each
        # side's best kept: the CPU is shared, and a neighbour's burst should not decide the ratio.
        times = {"whole": [], "tiled": []}
        for _ in range(ROUNDS):
            for mode in times:
                cfg = base | {
                    "mode": mode,
                    "output": None,
                    "limit": None,
                    "tile": tile if mode == "tiled" else None,
                }
                times[mode].append(_spawn(cfg, allocator={})["seconds"])
        best = {mode: min(t) for mode, t in times.items()}
        ratio = best["tiled"] / best["whole"]
        print(
            f"  time (glibc's allocator, best of {ROUNDS}): whole {best['whole']:.2f} s, "
            f"tiled {best['tiled']:.2f} s, tiled / whole {ratio:.2f}x"
            + ("" if side >= TIMED else f" (bound checked from {TIMED} px)")
        )
        if ratio > TIME_RATIO and side >= TIMED:
            failed.append(f"{side}: tiled time {ratio:.2f}x the whole image's (bound {TIME_RATIO}x)")
        out = str(folder / "naive.npy")
        naive_run = _spawn(base | {"mode": "naive", "output": out, "limit": None, "tile": tile})
        naive_psnr = psnr(np.load(out), want)
        print(
            f"  naive tiles of {tile} px (per-tile statistics): PSNR vs the whole-image forward "
            f"{naive_psnr:.1f} dB, {naive_run['seconds']:.2f} s"
        )
        if naive_psnr > got_psnr - NAIVE_GAP:
            failed.append(f"{side}: naive tiles {naive_psnr:.1f} dB are not {NAIVE_GAP} dB worse than tiled")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the accuracy and time comparison")
    parser.add_argument("--big", type=int, default=4096, help="side of the memory comparison (0: skip)")
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--netG", default="resnet_9blocks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    with tempfile.TemporaryDirectory(prefix="tiled-bench-") as tmp:
        failed = compare(args.size, args, Path(tmp), naive=True)
        if args.big:
            failed += compare(args.big, args, Path(tmp), naive=False)
    for line in failed:
        print("FAILED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
