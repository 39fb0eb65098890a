"""The training loop: data -> step -> (metrics, samples, checkpoints), resumable at any step.

`train` resolves where and how the run trains (fastcycle.train.env), reads the checkpoint to resume
from, and opens the run log; `_train` is the loop itself. Each concern it calls on is a module of its
own: the family's data and step (fastcycle.train.families), the metrics sink (metrics.py), the
checkpointer (checkpointer.py) and the stop signals (signals.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from fastcycle.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME
from fastcycle.config import TrainConfig, validate
from fastcycle.data import demo
from fastcycle.errors import UserError
from fastcycle.ranks import DistInfo
from fastcycle.train.checkpointer import Checkpointer, restore, resume_state
from fastcycle.train.data import DataSource, data_root
from fastcycle.train.distributed import broadcast_object, finish, init_distributed
from fastcycle.train.env import RunEnv, resolve_env
from fastcycle.train.evaluation import open_evaluator
from fastcycle.train.families import build_model, model_family
from fastcycle.train.gan import GANModel
from fastcycle.train.metrics import MetricsSink
from fastcycle.train.runlock import RunLock
from fastcycle.train.runlog import log, run_log
from fastcycle.train.signals import StopSignals


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[dict] = field(default_factory=list)  # every logged metrics line
    evals: list[dict] = field(default_factory=list)  # --eval-every: every evaluation's record (rank 0)
    demo_psnr: tuple[float, float] | None = None  # (translated, untranslated) dB, demo runs only
    demo_quality: demo.DemoQuality | None = None  # FID/KID vs testB, demo runs with --report-fid only
    stopped_by: str | None = None  # "SIGINT"/"SIGTERM" when a signal ended the run early (saved)


def train(cfg: TrainConfig) -> TrainResult:
    """Train cfg (validated here, once) to its last step, or until SIGINT/SIGTERM (saved, resumable)."""
    validate(cfg)
    run_dir = Path(cfg.run.out or Path("runs") / cfg.run.name)
    dist, device = init_distributed(cfg.runtime.device)
    try:
        with run_log(dist.is_main) as run_log_file, RunLock(run_dir) as lock:
            resumes = _claim(cfg, run_dir, dist, lock)
            run_log_file.open(run_dir)
            if cfg.run.resume == "auto":  # the first line of a requeued job's log says which it did
                log(f"resume auto: {'resuming the run in' if resumes else 'starting a new run in'} {run_dir}")
            if lock.note:
                log(lock.note)
            cfg = replace(cfg, run=replace(cfg.run, resume=resumes))
            env = resolve_env(cfg, run_dir, dist, device)
            state = resume_state(cfg, run_dir) if resumes else None
            return _train(cfg, env, state)
    finally:
        finish(dist)


def _claim(cfg: TrainConfig, run_dir: Path, dist: DistInfo, lock: RunLock) -> bool:
    """Rank 0 locks the run folder, then decides whether the run resumes (with the lock held, so no
    other run can write a checkpoint in between); every rank gets the verdict or the error line."""
    verdict = None
    if dist.is_main:
        try:
            if cfg.run.resume is True and not run_dir.is_dir():  # nothing to resume: create nothing
                _resumes(True, run_dir)
            lock.acquire()
            verdict = _resumes(cfg.run.resume, run_dir)
        except UserError as e:
            verdict = str(e)
    verdict = broadcast_object(verdict, dist)
    if isinstance(verdict, str):
        raise UserError(verdict)
    return verdict


def _resumes(resume: bool | str, run_dir: Path) -> bool:
    """--resume auto: whether the folder holds a checkpoint; --resume and no flag: that it does, or not."""
    held = any((run_dir / n).exists() for n in (CHECKPOINT_NAME, PREVIOUS_NAME))
    if resume == "auto":
        return held
    if resume and not held:
        raise UserError(
            f"--resume: no checkpoint in {run_dir}; start without --resume, use --resume auto, or fix --out"
        )
    if held and not resume:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume (or --resume auto) to continue it or --out NEW_DIR"
        )
    return bool(resume)


def _startup_line(cfg: TrainConfig, env: RunEnv, model: GANModel, source: DataSource, total: int) -> str:
    n = sum(p.numel() for p in model.nets[model.generators[0]].parameters())
    spec, dist = source.loader.spec, env.dist
    items = "images" if cfg.model.model == "dcgan" else "pairs"
    ranks = f" x {dist.world_size} ranks" if dist.enabled else ""
    return (
        f"device: {env.device} | {env.precision.note} | {env.kernels_note} | G {cfg.model.netG} "
        f"({n:,} params) | {source.note} | {spec.pairs} {items}/epoch, batch {cfg.optim.batch_size}{ranks}, "
        f"{total} steps"
    )


def _train(cfg: TrainConfig, env: RunEnv, state: dict | None) -> TrainResult:
    run, dist = cfg.run, env.dist
    source = model_family(cfg).open_data(cfg, data_root(cfg, env), env, state)
    data = source.loader
    model = build_model(cfg, env, labels=source.labels, n_classes=source.n_classes)
    if run.init_weights and state is None:
        log(f"weights: {', '.join(model.nets)} from {run.init_weights}")
    global_batch = cfg.optim.batch_size * dist.world_size
    step = 0 if state is None else restore(model, state, env.device, global_batch)
    if dist.is_main:
        (env.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    # --epoch-count N: epochs N..n_epochs+n_epochs_decay (1-based) remain; `epoch` below is 0-based.
    first_epoch, steps_per_epoch = cfg.optim.epoch_count - 1, data.spec.steps_per_epoch
    total = (cfg.optim.n_epochs + cfg.optim.n_epochs_decay - first_epoch) * steps_per_epoch
    total = min(total, run.max_steps) if run.max_steps else total
    log(_startup_line(cfg, env, model, source, total))
    checkpointer = Checkpointer(cfg, env, model, data)  # refuses a disk without room for its files
    evaluator = open_evaluator(cfg, env, model, source.held_out, resumed=state is not None)  # rank 0's
    sink = MetricsSink(cfg, env, model.loss_names, step, total, resumed=state is not None)
    sample_inputs, stopping = None, False
    with StopSignals(dist, env.device, agree_every=run.log_every) as stop, sink:
        while step < total and not stopping:
            epoch = first_epoch + step // steps_per_epoch
            for batch in data.epoch(epoch, start_step=step % steps_per_epoch):
                sink.data_skipped(batch.skipped)
                if sample_inputs is None:
                    sample_inputs = model.sample_inputs(batch)  # what the grids show all run long
                losses, skipped = model.step(batch)
                step += 1
                sink.step(step, epoch, losses, skipped, model.lr)
                end_of_epoch = step % steps_per_epoch == 0
                if end_of_epoch:
                    model.end_epoch()  # the reference's per-epoch LR policy
                if dist.is_main and run.sample_every and step % run.sample_every == 0:
                    sink.samples(model, sample_inputs, step)
                # Skipped once a stop was asked for: a preempted job's grace period is the save's.
                if evaluator and not stop.received and evaluator.due(step, epoch, end_of_epoch, total):
                    sink.evaluation(evaluator.evaluate(step, epoch))
                stopping = stop.stop_now(step)
                if checkpointer.due(step, end_of_epoch, total) or stopping:
                    checkpointer.save(step)
                if step >= total or stopping:
                    break
        if not stopping and dist.is_main and sample_inputs is not None:
            sink.samples(model, sample_inputs, step)
    result = TrainResult(env.run_dir, step, sink.records, sink.evals)
    if stopping:
        result.stopped_by = stop.received or "a signal to another rank"
        log(f"stopped by {result.stopped_by} after step {step}, checkpoint saved; continue with --resume")
        return result
    if sink.unreadable:
        log(f"data: {len(sink.unreadable)} image(s) turned unreadable during the run; see the lines above")
    log(f"done: {step} steps; checkpoint {env.run_dir / CHECKPOINT_NAME}")
    if cfg.data.data is None and dist.is_main and cfg.model.model == "cycle_gan":
        m = cfg.model
        held = demo.held_out(source.root, m.input_nc, m.output_nc)
        fake = demo.translate_tiles(model.generator("AtoB"), held.a, env.device, env.precision.dtype)
        result.demo_psnr = demo.psnr_scores(held, fake)
        if run.report_fid:
            result.demo_quality = demo.fid_scores(held, fake, env.device)
    return result
