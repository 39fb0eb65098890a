"""A distillation's cost and speed at full size, side by side: a teacher generator and its student.

    python -m benchmarks.distill_speed      # resnet_9blocks ngf 64 vs mobile_resnet_9blocks ngf 32, 256x256
    python -m benchmarks.distill_speed --backend onnxruntime
    python -m benchmarks.distill_speed --student resnet_9blocks:32 --size 128

Both generators have random weights: arithmetic and speed do not depend on what the weights are, so
no trained teacher is needed (`fastcycle distill --report RUN` measures a real pair the same way, with
its quality). Parameters and multiply-adds are counted by FlopCounterMode on the meta device; images/s
is measured on one backend for both (PyTorch eager fp32 through translate's TorchRunner, in
channels-last on a CPU, or both exported by fastcycle's ONNX export and run by ONNX Runtime), side by side in
alternating calls, the median call of each (fastcycle.train.distill.measure.images_per_second), at
batch 1 and 8 on a CPU, 1 and 32 on a GPU. The 1-minute load average is printed before and after: on
a shared machine the absolute numbers move with it, the ratio much less, since both generators see
the same load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from fastcycle.models import build_generator
from fastcycle.runner import TorchRunner
from fastcycle.runtime import resolve_device
from fastcycle.train.distill.measure import generator_cost, images_per_second


def _arch(text: str) -> tuple[str, int]:
    netG, _, ngf = text.partition(":")
    return netG, int(ngf or 64)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser("python -m benchmarks.distill_speed", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=_arch, default=("resnet_9blocks", 64), help="NETG:NGF")
    p.add_argument("--student", type=_arch, default=("mobile_resnet_9blocks", 32), help="NETG:NGF")
    p.add_argument("--size", type=int, default=256, help="image side")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=10.0, help="minimum timing per generator and batch")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    archs = {"teacher": args.teacher, "student": args.student}
    nets, cost = {}, {}
    folder = tempfile.TemporaryDirectory()  # the ONNX files, removed at the end
    for name, (netG, ngf) in archs.items():
        torch.manual_seed(0)
        nets[name] = build_generator(netG, ngf=ngf).eval().requires_grad_(False)
        cost[name] = generator_cost(netG, ngf, "instance", args.size)
        if args.backend == "onnxruntime":
            from fastcycle.export.onnx import export_onnx
            from fastcycle.export.ort import OrtRunner

            path = export_onnx(nets[name], Path(folder.name) / f"{name}.onnx", size=args.size)
            nets[name] = OrtRunner(path, device)
        else:
            nets[name] = TorchRunner(nets[name], device)  # as `fastcycle translate` runs it
    print(f"{'':8} {'generator':28} {'params':>11} {f'MACs {args.size}x{args.size}':>14}")
    for name, (netG, ngf) in archs.items():
        params, macs = cost[name]
        print(f"{name:8} {f'{netG} ngf {ngf}':28} {params:>11,} {macs / 1e9:>12.2f} G")
    ratio = [cost["teacher"][i] / cost["student"][i] for i in (0, 1)]
    print(f"{'teacher/student':37} {ratio[0]:>10.1f}x {ratio[1]:>13.1f}x")
    threads = torch.get_num_threads() if device.type == "cpu" and args.backend == "torch" else None
    # "torch eager on cpu, fp32, channels-last, torch kernels"; "onnxruntime CPU..., ..."
    note = nets["teacher"].note
    backend = note if args.backend == "torch" else f"{note.split(',')[0]} fp32 on {device}"
    print(
        f"images/s, {backend}"
        + (f" ({threads} threads)" if threads else "")
        + f", {args.size}x{args.size}, random weights, side by side; "
        f"load average {os.getloadavg()[0]:.1f} before"
    )
    with torch.no_grad():
        for batch in (1, 32) if device.type == "cuda" else (1, 8):
            speed = images_per_second(nets, batch, args.size, device, min_seconds=args.seconds)
            t, s = speed["teacher"], speed["student"]
            print(f"  batch {batch}: teacher {t:.2f}, student {s:.2f} ({s / t:.1f}x)")
    print(f"load average {os.getloadavg()[0]:.1f} after")
    folder.cleanup()


if __name__ == "__main__":
    main()
