"""What a run reports: a metrics line every --log-every steps (metrics.jsonl, TensorBoard, the progress
bar's postfix, MFU where the GPU's peak is known), each --eval-every evaluation's FID/KID record, the
steps the non-finite guard skipped, the files that turned unreadable mid-run, and the sample grids.

The losses and the guard's skip flags stay on the device between log lines and are read with one
.tolist() per line: the loop's only host-device sync.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import torch
from tqdm import tqdm

from fastcycle.atomic import write_atomic
from fastcycle.config import TrainConfig
from fastcycle.errors import UserError
from fastcycle.train.env import RunEnv
from fastcycle.train.flops import peak_flops, step_flops
from fastcycle.train.runlog import log

MAX_BAD_STEPS = 25  # consecutive skipped steps that end a run: the model has diverged, not hiccuped


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a line cut short by a crash
        return None


def open_metrics(path: Path, step: int) -> TextIO:
    """Open the metrics log for appending at `step`, dropping lines an interrupted run wrote after
    its last checkpoint (the resumed run logs those steps again) and any line cut short."""
    if path.exists():
        steps = [(line, _logged_step(line)) for line in path.read_text().splitlines()]
        kept = [line for line, s in steps if s is not None and s <= step]
        text = "".join(line + "\n" for line in kept)
        write_atomic(path, lambda tmp: tmp.write_text(text))
    return path.open("a")


class MetricsSink:
    """Everything a run writes about itself besides checkpoints; rank 0 writes, every rank reduces."""

    def __init__(
        self,
        cfg: TrainConfig,
        env: RunEnv,
        loss_names: tuple[str, ...],
        step: int,
        total: int,
        resumed: bool,
    ):
        run_dir, dist = env.run_dir, env.dist
        self.run_dir, self.dist, self.loss_names, self.total = run_dir, dist, loss_names, total
        self.every, self.batch_size = cfg.run.log_every, cfg.optim.batch_size
        # MFU where a peak is known (GPUs in flops.PEAK_BF16): FLOPs counted on a real CycleGAN step.
        self.peak = peak_flops(env.device)
        self.flops_per_pair = step_flops(cfg) if self.peak and cfg.model.model == "cycle_gan" else None
        self.board = None
        if cfg.run.tensorboard and dist.is_main:
            from fastcycle.train.tensorboard import TensorBoardSink

            self.board = TensorBoardSink(run_dir, purge_step=step if resumed else None)
        path = run_dir / "metrics.jsonl"
        self.metrics = open_metrics(path, step) if dist.is_main else open(os.devnull, "w")  # noqa: SIM115
        self.bar = tqdm(
            total=total,
            initial=step,
            unit="it",
            dynamic_ncols=True,
            file=sys.stderr,
            disable=None if dist.is_main else True,
        )
        self.records: list[dict] = []  # every metrics line written
        self.evals: list[dict] = []  # every evaluation's record written (--eval-every)
        self.unreadable: set[str] = set()
        self._skips: list[torch.Tensor] = []  # the guard's per-step flags since the last line, on the device
        self._streak = 0  # the current run of consecutive skipped steps
        self._t_last, self._step_last = time.perf_counter(), step

    def __enter__(self) -> MetricsSink:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.metrics.close()
        if self.board is not None:
            self.board.close()

    def step(self, step: int, epoch: int, losses: dict[str, torch.Tensor], skipped: torch.Tensor, lr: float):
        """Count a finished step; every `every` steps (and at the last) write a metrics line."""
        self._skips.append(skipped.float())
        self.bar.update(1)
        if step % self.every and step != self.total:
            return
        # .tolist() is the only host-device sync of the loop, once per log line.
        names = [k for k in self.loss_names if k in losses]
        values = torch.cat([torch.stack([losses[k] for k in names]), torch.stack(self._skips)])
        if self.dist.enabled:  # the losses over the global batch, not rank 0's share
            torch.distributed.all_reduce(values)
            values /= self.dist.world_size
        values = values.tolist()
        line = dict(zip(names, values[: len(names)], strict=True))
        now = time.perf_counter()
        pairs_per_s = (step - self._step_last) * self.batch_size / (now - self._t_last)
        self._t_last, self._step_last = now, step
        self._report_skips(values[len(names) :], step)
        record = {"step": step, "epoch": epoch, "lr": lr, "pairs_per_s": round(pairs_per_s, 3)}
        record |= {k: round(v, 5) for k, v in line.items()}
        speed = {"pairs/s": f"{pairs_per_s:.1f}"}
        if self.flops_per_pair:
            record["mfu"] = round(pairs_per_s * self.flops_per_pair / self.peak, 4)
            speed["mfu"] = f"{record['mfu']:.1%}"
        self.metrics.write(json.dumps(record) + "\n")
        if self.board is not None:
            self.board.log_scalars(step, record)
        self.metrics.flush()
        self.records.append(record)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in line.items()} | speed)

    def evaluation(self, record: dict) -> None:
        """An evaluation's record (fastcycle.train.evaluation) as a metrics line of its own, and its
        distances in TensorBoard (eval/AtoB/fid, eval/AtoB/kid, ..., eval/fid_sum)."""
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        self.evals.append(record)
        self._t_last += record["seconds"]  # pairs/s is the training's: the evaluation's time is not a step's
        if self.board is not None:
            scalars = {f"eval/{d}/{k}": q[k] for d, q in record["eval"].items() for k in ("fid", "kid")}
            scalars |= {"eval/fid_sum": record["fid_sum"], "eval/seconds": record["seconds"]}
            self.board.log_scalars(record["step"], scalars)

    def _report_skips(self, flags: list[float], step: int) -> None:
        """Log the steps the non-finite guard skipped among the last len(flags); stop on a long run."""
        self._skips = []
        first = step - len(flags) + 1
        skipped = [first + i for i, f in enumerate(flags) if f]
        if skipped:
            shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
            what = "with a non-finite loss or gradient, weights unchanged"
            log(f"skipped {len(skipped)} step(s) {what}: {shown}")
        for f in flags:
            self._streak = self._streak + 1 if f else 0
        if self._streak >= MAX_BAD_STEPS:
            raise UserError(
                f"training diverged: {self._streak} consecutive steps up to {step} had non-finite losses or "
                "gradients; the last checkpoint is intact: lower --lr, or use --amp-dtype bf16 instead of "
                "fp16"
            )

    def data_skipped(self, paths: list[str]) -> None:
        """Name, once each, the files a loader found unreadable since the folder scan."""
        for path in paths:
            if path not in self.unreadable:
                self.unreadable.add(path)
                log(f"data: skipped {path}: unreadable since the folder scan")

    def samples(self, model, inputs: tuple, step: int) -> None:
        """The model's sample grid of `inputs` as samples/step_N.png (and in TensorBoard)."""
        image = model.save_samples(inputs, self.run_dir / "samples" / f"step_{step:07d}.png")
        if self.board is not None:
            self.board.log_image("samples", step, image)
