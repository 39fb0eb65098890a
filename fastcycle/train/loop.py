"""The training loop: data -> step -> (logging, samples, checkpoints), resumable at any step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from fastcycle.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, newest_checkpoint, save_checkpoint
from fastcycle.config import TrainConfig, validate
from fastcycle.data import demo
from fastcycle.data.contract import LoaderSpec
from fastcycle.data.loader import build_loader
from fastcycle.data.scan import scan_domain
from fastcycle.errors import UserError
from fastcycle.runtime import resolve_kernels, resolve_precision
from fastcycle.train.distributed import DistInfo, any_rank, finish, init_distributed
from fastcycle.train.families import build_model, model_kernels
from fastcycle.train.flops import peak_flops, step_flops


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[dict] = field(default_factory=list)  # every logged metrics line
    demo_psnr: tuple[float, float] | None = None  # (translated, untranslated) dB, demo runs only
    stopped_by: str | None = None  # "SIGINT"/"SIGTERM" when a signal ended the run early (saved)


class _StopSignals:
    """SIGINT and SIGTERM ask the loop to stop after the current step and save (a graceful stop for
    Ctrl-C and for schedulers' preemption notices); a second SIGINT interrupts at once."""

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


_run_log = None  # the open train.log of the current run, beside the checkpoint
_is_main = True  # under torchrun only rank 0 logs


def log(msg: str, to_terminal: bool = True) -> None:
    """One line to the terminal (above the progress bar) and to the run folder's train.log."""
    if not _is_main:
        return
    if to_terminal:
        tqdm.write(msg, file=sys.stderr)
    if _run_log is not None:
        _run_log.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")
        _run_log.flush()


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a line cut short by a crash
        return None


def _open_metrics(path: Path, step: int):
    """Open the metrics log for appending at `step`, dropping lines an interrupted run wrote after
    its last checkpoint (the resumed run logs those steps again) and any line cut short."""
    if path.exists():
        steps = [(line, _logged_step(line)) for line in path.read_text().splitlines()]
        kept = [line for line, s in steps if s is not None and s <= step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return path.open("a")


def _check_free_space(run_dir: Path, model) -> None:
    """Refuse to start a run whose checkpoints cannot fit: a save needs room for the new file beside
    the current and the previous one (weights, Adam's two moments, EMA and pools, each in fp32)."""

    def nbytes(nets) -> int:
        return sum(t.numel() * t.element_size() for net in nets for t in net.state_dict().values())

    need = 3 * (3 * nbytes(model.nets.values()) + nbytes(e.net for e in model.ema.values()))
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise UserError(
            f"{run_dir} has {free / 2**30:.2f} GiB free, but checkpoints need about {need / 2**30:.2f} GiB; "
            "free some space or choose another --out"
        )


MAX_BAD_STEPS = 25  # consecutive skipped steps that end a run: the model has diverged, not hiccuped


def _report_skips(flags: list[float], step: int, streak: int) -> int:
    """Log the steps the non-finite guard skipped among the last len(flags); stop on a long run of
    them. Returns the current run of consecutive skipped steps."""
    first = step - len(flags) + 1
    skipped = [first + i for i, f in enumerate(flags) if f]
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
        log(f"skipped {len(skipped)} step(s) with a non-finite loss or gradient, weights unchanged: {shown}")
    for f in flags:
        streak = streak + 1 if f else 0
    if streak >= MAX_BAD_STEPS:
        raise UserError(
            f"training diverged: {streak} consecutive steps up to {step} had non-finite losses or gradients; "
            "the last checkpoint is intact: lower --lr, or use --amp-dtype bf16 instead of fp16"
        )
    return streak


def train(cfg: TrainConfig) -> TrainResult:
    validate(cfg)
    rt, run = cfg.runtime, cfg.run
    run_dir = Path(run.out or Path("runs") / run.name)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    if not run.resume and any((run_dir / n).exists() for n in (CHECKPOINT_NAME, PREVIOUS_NAME)):
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --out NEW_DIR")
    global _run_log, _is_main
    dist_info, device = init_distributed(rt.device)
    _is_main = dist_info.is_main
    precision = resolve_precision(rt.amp, rt.amp_dtype, device)
    kernels, kernels_note = model_kernels(cfg, *resolve_kernels(rt.kernels, device))

    state = None
    if run.resume:
        state = newest_checkpoint(run_dir, say=log)
        saved = state["config"]
        try:  # validated like command-line values; options added since the run started take defaults
            saved_cfg = TrainConfig.from_dict(saved)
        except UserError as e:
            raise UserError(f"--resume: the checkpoint in {run_dir} holds an invalid config: {e}") from None
        for key in ("model", "loss"):  # the networks and objective of a run cannot change mid-run
            if getattr(saved_cfg, key) != getattr(cfg, key):
                raise UserError(
                    f"--resume: the {key} options differ from the run's saved ones ({checkpoint_path})"
                )

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _run_log = (run_dir / "train.log").open("a") if dist_info.is_main else None
    except OSError as e:
        raise UserError(f"cannot write to {run_dir} ({e.strerror}); choose a writable --out") from None
    try:
        return _train(cfg, run_dir, device, precision, kernels, kernels_note, state, dist_info)
    finally:
        if _run_log is not None:
            _run_log.close()
        _run_log, _is_main = None, True
        finish(dist_info)


def _log_scan(scan) -> None:
    log(f"data: {scan.summary()}")
    for path, why in scan.skipped:
        log(f"data: skipped {path}: {why}", to_terminal=False)
    for f in scan.converted:
        log(f"data: converted {f.path} ({f.convert}) to RGB", to_terminal=False)


def _open_data(
    cfg: TrainConfig, run_dir: Path, device: torch.device, state: dict | None, dist_info: DistInfo
) -> DataSource:
    """Scan the dataset (reporting what is skipped or converted), then build the family's loader."""
    d, family = cfg.data, cfg.model.model
    data_root = d.data
    if data_root is None:
        if family != "cycle_gan":
            what = "a train/ folder of A|B images" if family == "pix2pix" else "a folder of images"
            raise UserError(f"--model {family} has no built-in demo: pass --data DIR ({what})")
        if dist_info.is_main:
            demo.build(run_dir / "demo_data")
            log(f"data: built-in demo ({demo.DESCRIPTION}) in {run_dir / 'demo_data'}")
        if dist_info.enabled:
            torch.distributed.barrier()  # the other ranks read what rank 0 wrote
        data_root = run_dir / "demo_data"
    common = dict(
        policy=d.preprocess,
        load_size=d.load_size,
        crop_size=d.crop_size,
        flip=not d.no_flip,
        serial_batches=d.serial_batches,
        seed=cfg.runtime.seed,
        batch_size=cfg.optim.batch_size,
        device=device,
        channels_last=cfg.runtime.channels_last,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
    )
    if family != "cycle_gan":
        if d.loader not in ("auto", "torch"):
            raise UserError(f"--model {family} reads its data with --loader torch; drop --loader {d.loader}")
        if family == "pix2pix":
            from fastcycle.data.aligned import open_aligned

            loader = open_aligned(
                data_root,
                d.direction,
                num_workers=d.num_workers,
                max_dataset_size=d.max_dataset_size,
                **common,
            )
        else:
            from fastcycle.data.single import open_single

            loader = open_single(
                data_root, num_workers=d.num_workers, max_dataset_size=d.max_dataset_size, **common
            )
        for scan in loader.scans:
            _log_scan(scan)
        for name in loader.unmatched:  # the note counts them; the run log names them
            log(f"data: unmatched {name}", to_terminal=False)
        return DataSource(Path(data_root), loader, loader.note)
    scans = [scan_domain(data_root, name, d.max_dataset_size) for name in ("trainA", "trainB")]
    for scan in scans:
        _log_scan(scan)
    labels = None
    if cfg.model.aux_classifier:
        labels = _read_labels(cfg, scans)
    spec = LoaderSpec(*scans, **common)
    loader, note = build_loader(d, spec, run_dir, state.get("loader") if state else None)
    return DataSource(Path(data_root), loader, note, labels)


def _read_labels(cfg: TrainConfig, scans):
    """--aux-classifier: each scanned file's class from the CSVs (-1: unlabelled)."""
    from fastcycle.data.labels import load_domain_labels

    d = cfg.data
    if not (d.labels_A or d.labels_B):
        raise UserError(
            "--aux-classifier needs labels: pass --labels-A and/or --labels-B (CSV filename,label)"
        )
    table = load_domain_labels({"A": d.labels_A, "B": d.labels_B}, {"A": scans[0], "B": scans[1]})
    for line in table.summary().splitlines():
        log(f"labels: {line}")
    for row in table.unmatched:  # the summary counts them; the run log names them
        log(f"labels: no such image: {row}", to_terminal=False)
    return table


@dataclass
class DataSource:
    root: Path
    loader: object  # fastcycle.data.loader.Loader
    note: str  # which loader and why, for the start-up line
    labels: object | None = None  # fastcycle.data.labels.LabelTable with --aux-classifier


def _train(cfg, run_dir, device, precision, kernels, kernels_note, state, dist_info) -> TrainResult:
    run = cfg.run
    checkpoint_path = run_dir / CHECKPOINT_NAME
    source = _open_data(cfg, run_dir, device, state, dist_info)
    data_root, data, data_note = source.root, source.loader, source.note
    main = dist_info.is_main
    global_batch = cfg.optim.batch_size * dist_info.world_size

    labels, n_classes = None, 0
    if source.labels is not None:
        labels = (torch.from_numpy(source.labels.A), torch.from_numpy(source.labels.B))
        n_classes = len(source.labels.classes)
    model = build_model(cfg, device, precision, kernels, dist_info, labels, n_classes)
    if run.init_weights and state is None:
        log(f"weights: {', '.join(model.nets)} from {run.init_weights}")
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        _set_rng_state(state["rng"], device)
        step = state["step"]
        saved_batch = state.get("global_batch", global_batch)
        if saved_batch != global_batch:  # another world size or batch: keep the pairs seen, not the steps
            step = step * saved_batch // global_batch
            log(f"resume: global batch {saved_batch} -> {global_batch}, step {state['step']} -> {step}")
    if main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    # --epoch-count N: epochs N..n_epochs+n_epochs_decay (1-based) remain; `epoch` below is 0-based.
    first_epoch = cfg.optim.epoch_count - 1
    n_epochs = cfg.optim.n_epochs + cfg.optim.n_epochs_decay - first_epoch
    steps_per_epoch = data.spec.steps_per_epoch
    total = n_epochs * steps_per_epoch
    if run.max_steps:
        total = min(total, run.max_steps)
    n = sum(p.numel() for p in model.nets[model.generators[0]].parameters())
    log(
        f"device: {device} | {precision.note} | {kernels_note} | G {cfg.model.netG} ({n:,} params) | "
        f"{data_note} | {data.spec.pairs} {'images' if cfg.model.model == 'dcgan' else 'pairs'}/epoch, "
        f"batch {cfg.optim.batch_size}"
        + (f" x {dist_info.world_size} ranks" if dist_info.enabled else "")
        + f", {total} steps"
    )

    def checkpoint() -> None:
        if not main:
            return
        try:
            _save()
        except OSError as e:  # disk full, folder gone: atomic_save removed its partial file
            raise UserError(
                f"could not write a checkpoint in {run_dir} ({e.strerror}); the previous one is intact: "
                "free some space and continue with --resume"
            ) from None

    def _save() -> None:
        save_checkpoint(
            run_dir,
            {
                "config": cfg.to_dict(),
                "step": step,
                "model": model.state_dict(),
                "rng": _rng_state(device),
                "loader": data.state_dict(),
                "global_batch": global_batch,
            },
        )

    _check_free_space(run_dir, model)
    # MFU on the progress line where a peak is known (GPUs in flops.PEAK_BF16): counted FLOPs per pair.
    peak = peak_flops(device)
    flops_per_pair = step_flops(cfg) if peak and cfg.model.model == "cycle_gan" else None
    sample_batch = None
    result = TrainResult(run_dir, step)
    metrics = _open_metrics(run_dir / "metrics.jsonl", step) if main else open(os.devnull, "w")  # noqa: SIM115
    board = None
    if run.tensorboard and main:
        from fastcycle.train.tensorboard import TensorBoardSink

        board = TensorBoardSink(run_dir, purge_step=step if state is not None else None)

    def save_samples() -> None:
        image = model.save_samples(sample_batch, run_dir / "samples" / f"step_{step:07d}.png")
        if board is not None:
            board.log_image("samples", step, image)

    bar = tqdm(
        total=total,
        initial=step,
        unit="it",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None if main else True,
    )
    skipped_seen: set[str] = set()
    t_last, step_last = time.perf_counter(), step
    stop = _StopSignals()
    skips, streak = [], 0  # the guard's per-step skip flags since the last log line; current bad run
    stopping = False
    try:
        stop.__enter__()
        while step < total and not stopping:
            run_epoch, in_epoch = divmod(step, steps_per_epoch)
            epoch = first_epoch + run_epoch
            for batch in data.epoch(epoch, start_step=in_epoch):
                for path in batch.skipped:
                    if path not in skipped_seen:
                        skipped_seen.add(path)
                        log(f"data: skipped {path}: unreadable since the folder scan")
                if sample_batch is None:
                    sample_batch = model.sample_inputs(batch)
                losses = model.step(batch)
                skips.append(model.last_skipped.float())
                step += 1
                bar.update(1)
                if step % run.log_every == 0 or step == total:
                    # .tolist() is the only host-device sync of the loop, once per log line.
                    names = [k for k in model.loss_names if k in losses]
                    values = torch.cat([torch.stack([losses[k] for k in names]), torch.stack(skips)])
                    if dist_info.enabled:  # the losses over the global batch, not rank 0's share
                        torch.distributed.all_reduce(values)
                        values /= dist_info.world_size
                    values = values.tolist()
                    line = dict(zip(names, values[: len(names)], strict=True))
                    now = time.perf_counter()
                    pairs_per_s = (step - step_last) * cfg.optim.batch_size / (now - t_last)
                    t_last, step_last = now, step
                    streak = _report_skips(values[len(names) :], step, streak)
                    skips = []
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "lr": model.lr,
                        "pairs_per_s": round(pairs_per_s, 3),
                        **{k: round(v, 5) for k, v in line.items()},
                    }
                    speed = {"pairs/s": f"{pairs_per_s:.1f}"}
                    if flops_per_pair:
                        record["mfu"] = round(pairs_per_s * flops_per_pair / peak, 4)
                        speed["mfu"] = f"{record['mfu']:.1%}"
                    metrics.write(json.dumps(record) + "\n")
                    if board is not None:
                        board.log_scalars(step, record)
                    metrics.flush()
                    result.losses.append(record)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in line.items()} | speed)
                end_of_epoch = step % steps_per_epoch == 0
                if end_of_epoch:
                    model.end_epoch()  # the reference's per-epoch LR policy
                if main and run.sample_every and step % run.sample_every == 0:
                    save_samples()
                # Ranks must stop at the same step (or the next all-reduce waits forever): under torchrun
                # they agree at log lines, a sync point already; a single process stops at once.
                if not dist_info.enabled:
                    stopping = stop.received is not None
                elif step % run.log_every == 0:
                    stopping = bool(any_rank(stop.received is not None, dist_info, device))
                if step % run.save_every == 0 or end_of_epoch or step == total or stopping:
                    checkpoint()
                if step >= total or stopping:
                    break
    finally:
        stop.__exit__()
        bar.close()
        metrics.close()
        if board is not None:
            board.close()
    if stopping:
        result.stopped_by, result.step = stop.received or "a signal to another rank", step
        log(f"stopped by {result.stopped_by} after step {step}, checkpoint saved; continue with --resume")
        return result
    if main and sample_batch is not None:
        save_samples()
    if skipped_seen:
        log(f"data: {len(skipped_seen)} image(s) turned unreadable during the run; see the lines above")
    result.step = step
    log(f"done: {step} steps; checkpoint {checkpoint_path}")
    if cfg.data.data is None and main and cfg.model.model == "cycle_gan":
        result.demo_psnr = demo.evaluate(model.generator("AtoB"), data_root, device, precision.dtype)
    return result
