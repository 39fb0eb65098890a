"""Checkpoints: atomic full-state saves, safe loading, and the reference implementation's .pth files.

A fastcycle checkpoint is one `torch.save` file holding the resolved config, the step counters, all
network, EMA, optimizer, scheduler, scaler and pool states, and the RNG states, plus a SHA-256 of all
its tensors' bytes. A save writes a temporary file and fsyncs it, moves the current checkpoint.pt to
checkpoint.prev.pt, and renames the new file into place: at every instant the run folder holds at
least one complete checkpoint. Loading checks the digest (a zip that unpacks but carries flipped or
zeroed bytes is caught) and `--resume` falls back to checkpoint.prev.pt when the newest is damaged.
Loading uses `weights_only=True`: a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError

FORMAT = "fastcycle-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"  # the good checkpoint before the newest, kept as a fallback
BEST_NAME = "checkpoint.best.pt"  # --eval-every: the generators of the evaluation with the lowest FID
# Reference checkpoints of InstanceNorm models made with PyTorch < 0.4 carry these; our norms have none.
_STALE_NORM_KEYS = ("running_mean", "running_var", "num_batches_tracked")


def atomic_save(obj: Any, path: Path, before_rename: Callable[[], object] | None = None) -> None:
    """torch.save to `path` such that `path` always holds either the old or the complete new file, on disk
    (a durable write_atomic); before_rename as write_atomic's."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp), before_rename=before_rename)


def safe_load(path: Path, mmap: bool = False) -> Any:
    """torch.load with weights_only=True, turning every failure into one UserError line. mmap: map the
    tensors instead of reading them, for callers that only look at the small entries."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch reports both a pickle that imports code and plain garbage as UnpicklingError; only
        # the former names a GLOBAL (e.g. "GLOBAL posix.system").
        code = re.search(r"GLOBAL ([\w.]+)", str(e))
        if code:
            raise UserError(
                f"{path} was refused: it would import {code.group(1)}, and fastcycle loads only plain-tensor "
                "checkpoints (weights_only); re-save its state_dict() from a trusted source"
            ) from None
        raise UserError(f"{path} is not a readable checkpoint (corrupt, or not a torch.save file)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is not a readable checkpoint (truncated or not a torch file: {first})"
        ) from None


def digest(obj: Any) -> str:
    """SHA-256 over every tensor's bytes (and the repr of everything else), in a fixed order."""
    h = hashlib.sha256()

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(repr(k).encode())
                visit(x[k])
        elif isinstance(x, list | tuple):
            for v in x:
                visit(v)
        else:
            h.update(repr(x).encode())

    visit(obj)
    return h.hexdigest()


def save_state(path: Path, state: dict, before_rename: Callable[[], object] | None = None) -> Path:
    """`state` as a fastcycle checkpoint file at `path` (format, version and digest added), atomically."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload["sha256"] = digest(payload)
    atomic_save(payload, Path(path), before_rename=before_rename)
    return Path(path)


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    """Write the newest checkpoint; the one it replaces becomes checkpoint.prev.pt."""
    run_dir = Path(run_dir)
    path, previous = run_dir / CHECKPOINT_NAME, run_dir / PREVIOUS_NAME

    def keep_previous() -> None:  # only once the new checkpoint is whole and on disk
        if path.exists():
            os.replace(path, previous)

    return save_state(path, state, before_rename=keep_previous)


def load_checkpoint(path: Path) -> dict:
    """A fastcycle checkpoint file or run folder -> its state dict, its digest checked."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    return check_checkpoint(safe_load(path), path)


def check_checkpoint(state: Any, path: Path) -> dict:
    """`state`, a loaded fastcycle checkpoint, with its format, version and digest checked (and the digest
    removed), so a caller that has read a file once need not read it again to check it."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a fastcycle training checkpoint")
    if state.get("version") != VERSION:
        raise UserError(
            f"{path} has checkpoint version {state.get('version')}; this fastcycle reads {VERSION}"
        )
    expected = state.pop("sha256", None)
    if expected is None or digest(state) != expected:
        raise UserError(f"{path} is damaged: its contents do not match the checksum saved with them")
    return state


def newest_checkpoint(run_dir: Path, say=print) -> dict:
    """The newest complete checkpoint of a run (checkpoint.pt, else checkpoint.prev.pt), saying why
    when it has to fall back."""
    run_dir = Path(run_dir)
    candidates = [run_dir / CHECKPOINT_NAME, run_dir / PREVIOUS_NAME]
    if not any(p.exists() for p in candidates):
        raise UserError(f"--resume: no checkpoint in {run_dir}; start without --resume or fix --out")
    problems = []
    for p in candidates:
        if not p.exists():
            continue
        try:
            state = load_checkpoint(p)
        except UserError as e:
            problems.append(str(e))
            say(f"checkpoint: skipping {e}")
            continue
        if problems:
            say(f"checkpoint: resuming from {p.name} (step {state['step']})")
        return state
    raise UserError(f"--resume: no usable checkpoint in {run_dir} ({'; '.join(problems)})")


def clean_reference_state_dict(
    state_dict: dict[str, torch.Tensor], net: nn.Module
) -> dict[str, torch.Tensor]:
    """Adapt a reference (junyanz) state dict to `net`: strip DataParallel's `module.` prefix and drop
    the InstanceNorm running statistics that old PyTorch versions saved."""
    own = net.state_dict()
    norms = {name for name, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    cleaned = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        owner, _, leaf = key.rpartition(".")
        if key not in own and leaf in _STALE_NORM_KEYS and owner in norms:
            continue
        cleaned[key] = value
    return cleaned


def load_weights(net: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """load_state_dict(strict) with a one-line error naming what does not match."""
    state_dict = clean_reference_state_dict(state_dict, net)
    own = net.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            theirs, ours = tuple(state_dict[k].shape), tuple(own[k].shape)
            parts.append(f"{len(wrong)} of other shape (e.g. {k}: {theirs} vs {ours})")
        raise UserError(
            f"{source} does not fit this network: {', '.join(parts)}; "
            "check --netG/--ngf/--input-nc/--output-nc/--norm/--dropout"
        )
    net.load_state_dict(state_dict)
    return net
