"""A run's checkpoints: resuming from the newest good one, and saving the full state at the run's cadence.

The file format, the atomic save and the fallback to checkpoint.prev.pt are fastcycle.checkpoint's;
this module decides when to save, what a run's state is (networks, optimizers, pools, RNGs, the
loader's position), and refuses to start a run whose disk cannot hold its checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from fastcycle.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    load_checkpoint,
    newest_checkpoint,
    save_checkpoint,
    save_state,
)
from fastcycle.config import TrainConfig, parse_eval_every
from fastcycle.data.contract import Loader
from fastcycle.errors import UserError
from fastcycle.train.env import RunEnv
from fastcycle.train.gan import GANModel
from fastcycle.train.runlog import log


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def resume_state(cfg: TrainConfig, run_dir: Path) -> dict:
    """--resume: the newest complete checkpoint of `run_dir`, its config validated like command-line
    values and its networks and objective (model and loss options) the same as cfg's."""
    state = newest_checkpoint(run_dir, say=log)
    try:  # options added since the run started take defaults
        saved = TrainConfig.from_dict(state["config"])
    except UserError as e:
        raise UserError(f"--resume: the checkpoint in {run_dir} holds an invalid config: {e}") from None
    for key in ("model", "loss"):  # the networks and objective of a run cannot change mid-run
        if getattr(saved, key) != getattr(cfg, key):
            raise UserError(
                f"--resume: the {key} options differ from the run's saved ones ({run_dir / CHECKPOINT_NAME})"
            )
    return state


def restore(model: GANModel, state: dict, device: torch.device, global_batch: int) -> int:
    """Load a resumed checkpoint into the model and the RNGs; returns the step to continue from."""
    model.load_state_dict(state["model"])
    _set_rng_state(state["rng"], device)
    step = state["step"]
    saved_batch = state.get("global_batch", global_batch)
    if saved_batch != global_batch:  # another world size or batch: keep the pairs seen, not the steps
        step = step * saved_batch // global_batch
        log(f"resume: global batch {saved_batch} -> {global_batch}, step {state['step']} -> {step}")
    return step


def check_free_space(run_dir: Path, model: GANModel, best: bool = False) -> None:
    """Refuse to start a run whose checkpoints cannot fit: a save needs room for the new file beside
    the current and the previous one (weights, Adam's two moments, EMA and pools, each in fp32), and
    with `best` (--eval-every) a new checkpoint.best.pt beside the current one."""

    def nbytes(nets) -> int:
        return sum(t.numel() * t.element_size() for net in nets for t in net.state_dict().values())

    ema = nbytes(e.net for e in model.ema.values())
    need = 3 * (3 * nbytes(model.nets.values()) + ema)
    if best:  # checkpoint.best.pt and its replacement: the generators and their EMA
        need += 2 * (nbytes(model.nets[name] for name in model.generators) + ema)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise UserError(
            f"{run_dir} has {free / 2**30:.2f} GiB free, but checkpoints need about {need / 2**30:.2f} GiB; "
            "free some space or choose another --out"
        )


class Checkpointer:
    """Saves the run's full state (rank 0) every --save-every steps, at each epoch end, at the last step
    and on a stop; the disk is checked for room when it is made."""

    def __init__(self, cfg: TrainConfig, env: RunEnv, model: GANModel, loader: Loader):
        check_free_space(env.run_dir, model, best=parse_eval_every(cfg.run.eval_every)[0] > 0)
        self.cfg, self.env, self.model, self.loader = cfg, env, model, loader

    def due(self, step: int, end_of_epoch: bool, total: int) -> bool:
        return step % self.cfg.run.save_every == 0 or end_of_epoch or step == total

    def save(self, step: int) -> None:
        if not self.env.dist.is_main:
            return
        state = {
            "config": self.cfg.to_dict(),
            "step": step,
            "model": self.model.state_dict(),
            "rng": _rng_state(self.env.device),
            "loader": self.loader.state_dict(),
            "global_batch": self.cfg.optim.batch_size * self.env.dist.world_size,
        }
        try:
            save_checkpoint(self.env.run_dir, state)
        except OSError as e:  # disk full, folder gone: the atomic save removed its partial file
            raise UserError(
                f"could not write a checkpoint in {self.env.run_dir} ({e.strerror}); the previous one is "
                "intact: free some space and continue with --resume"
            ) from None


def save_best(run_dir: Path, cfg: TrainConfig, model: GANModel, step: int, record: dict) -> None:
    """The generators as checkpoint.best.pt (atomic: the previous best stays whole until the new file
    is): a checkpoint that `fastcycle translate` and `export` read like any other (the config, the
    generators and their EMA weights), with `record`, the evaluation that made it the best."""
    state = {
        "config": cfg.to_dict(),
        "step": step,
        "model": {
            "nets": {name: model.nets[name].state_dict() for name in model.generators},
            "ema": {name: e.net.state_dict() for name, e in model.ema.items()},
        },
        "best": record,
    }
    try:
        save_state(run_dir / BEST_NAME, state)
    except OSError as e:  # disk full, folder gone: the atomic save removed its partial file
        raise UserError(
            f"could not write {run_dir / BEST_NAME} ({e.strerror or e}); the previous best is intact: free "
            "some space and continue with --resume"
        ) from None


def read_best(run_dir: Path, say=print) -> dict | None:
    """The evaluation record saved in checkpoint.best.pt (its "step" and "fid_sum"), or None without a
    usable file (a damaged one is said, and replaced by the next evaluation)."""
    path = run_dir / BEST_NAME
    if not path.exists():
        return None
    try:
        return load_checkpoint(path)["best"]
    except (UserError, KeyError) as e:
        say(f"eval: {path.name} is not usable ({e}); the next evaluation replaces it")
        return None
