"""FID and KID during training (--eval-every): each generator on the run's held-out images every N steps
or epochs and at the last step, and the best generators so far as checkpoint.best.pt.

Rank 0 evaluates; it runs no collective while it does (the generators are called as plain modules, not
through their DDP wrappers, in eval mode, where a SyncBatchNorm reads its running statistics), so the
other ranks simply wait in their next step's gradient all-reduce. The Inception network is loaded once
and the real images' features computed once per run (fastcycle.quality: a real folder's features are
cached by content across runs); an evaluation translates the held-out inputs and computes their
features, and nothing else. Between evaluations it costs nothing: no sync, no memory but the network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from fastcycle.checkpoint import BEST_NAME
from fastcycle.config import TrainConfig, parse_eval_every
from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.errors import UserError
from fastcycle.models import eval_mode
from fastcycle.quality.distances import Quality, Stats, compare, statistics
from fastcycle.quality.features import inception_features
from fastcycle.quality.realsets import real_features
from fastcycle.quality.weights import find, load_inception
from fastcycle.runner import run_padded
from fastcycle.train.checkpointer import read_best, save_best
from fastcycle.train.distributed import broadcast_object
from fastcycle.train.env import RunEnv
from fastcycle.train.gan import GANModel
from fastcycle.train.heldout import EvalSet, HeldOut, Item, read_item
from fastcycle.train.runlog import log

# Pixels per generator call: 16 images of 256x256 (~1 GB of bf16 activations for resnet_9blocks at ngf
# 64, beside the training's own memory), fewer of larger images, one at a time above 1 megapixel.
BATCH_PIXELS = 16 * 256 * 256


def eval_due(every: tuple[int, str], step: int, epoch: int, end_of_epoch: bool, total: int) -> bool:
    """Whether `step` (1-based, finished) is an evaluation step: every N steps, or at the end of every
    Nth epoch (epoch: 0-based, so epochs N, 2N, ... counted from 1 as the reference counts them), and
    the run's last step."""
    n, unit = every
    if not n:
        return False
    if step == total:
        return True
    return step % n == 0 if unit == "step" else end_of_epoch and (epoch + 1) % n == 0


def _batches(items: list[Item], nc: int) -> Iterator[list[np.ndarray]]:
    """The held-out images decoded, in order, as lists of same-size images of at most BATCH_PIXELS."""
    batch: list[np.ndarray] = []
    for item in items:
        image = read_item(item, nc)
        full = (len(batch) + 1) * image.shape[0] * image.shape[1] > BATCH_PIXELS
        if batch and (image.shape != batch[0].shape or full):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


class Evaluator:
    """Rank 0's evaluations of one run: its held-out sets, the real sets' statistics, the best so far."""

    def __init__(self, cfg: TrainConfig, env: RunEnv, model: GANModel, held: HeldOut, resumed: bool):
        self.cfg, self.env, self.model, self.sets = cfg, env, model, held.sets
        self.every = parse_eval_every(cfg.run.eval_every)
        t0 = time.perf_counter()
        weights = find(cfg.run.inception_weights)
        self.net = load_inception(weights, env.device)  # found above: not hashed again
        self.real: dict[str, tuple[np.ndarray, Stats]] = {}
        cached = []
        for s in self.sets:
            features, from_cache = self._real_features(s, weights.sha256)
            self.real[s.direction] = features, statistics(features)
            cached.append(from_cache)
        n_real = " and ".join(f"{len(s.reals)}" for s in self.sets)
        how = "cached" if all(cached) else "computed"
        log(
            f"eval: held out: {held.where}; every {self.every[0]} {self.every[1]}(s), up to "
            f"{cfg.run.eval_images} images per set; real features ({n_real} images) {how} in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        # The bar a resumed run's evaluations must beat: the best file's own FID sum (it may be newer than
        # the checkpoint resumed from, and then the steps trained again must beat it too).
        self.best_fid, self.best_step = math.inf, None
        if (env.run_dir / BEST_NAME).exists() and not resumed:
            log(f"eval: {BEST_NAME} of an earlier start in this folder is replaced at the first evaluation")
        elif resumed and (best := read_best(env.run_dir, say=log)) is not None:
            self.best_fid, self.best_step = best["fid_sum"], best["step"]
            log(f"eval: best so far: FID sum {self.best_fid:.3f} at step {self.best_step} ({BEST_NAME})")

    def _real_features(self, s: EvalSet, weights_sha256: str) -> tuple[np.ndarray, bool]:
        """The target domain's features: whole RGB files through the content-keyed cache; halves (pix2pix's
        test/) and grayscale targets (the luminance, as the loaders read them) computed here, once."""
        if s.output_nc == 3 and all(half is None for _, half in s.reals):
            return real_features([p for p, _ in s.reals], self.net, weights_sha256)
        return inception_features((read_item(item, s.output_nc) for item in s.reals), self.net), False

    def due(self, step: int, epoch: int, end_of_epoch: bool, total: int) -> bool:
        return eval_due(self.every, step, epoch, end_of_epoch, total)

    @torch.no_grad()
    def translate(self, G: nn.Module, s: EvalSet) -> list[np.ndarray]:
        """G over the set's inputs, in eval mode and the run's autocast, as (H, W, output_nc) uint8."""
        layout = torch.channels_last if self.cfg.runtime.channels_last else torch.contiguous_format
        out = []
        with eval_mode(G):
            for batch in _batches(s.inputs, s.input_nc):
                x = torch.from_numpy(np.stack(batch)).to(self.env.device).permute(0, 3, 1, 2)
                x = to_model_range(x).contiguous(memory_format=layout)
                with self.model.autocast():
                    # G.forward, not G(x): --compile compiles the training's static shapes in place, and
                    # held-out images of other sizes would recompile it; eager is what translate runs.
                    y = run_padded(G.forward, x, G.spec.size_multiple)
                out.extend(to_uint8(y).permute(0, 2, 3, 1).cpu().numpy())
        return out

    def evaluate(self, step: int, epoch: int) -> dict:
        """Measure every direction; save the generators as the best when the FID sum improves. Returns
        the metrics record."""
        t0 = time.perf_counter()
        results: dict[str, Quality] = {}
        for s in self.sets:
            fakes = self.translate(self.model.generator(s.direction), s)
            real, stats = self.real[s.direction]
            results[s.direction] = compare(inception_features(fakes, self.net), real, stats)
        fid_sum = sum(q.fid for q in results.values())
        best = fid_sum < self.best_fid
        record = {"step": step, "epoch": epoch, "eval": {k: q.as_dict() for k, q in results.items()}}
        record |= {"fid_sum": fid_sum, "best": best}
        if best:  # before anything else is said of this evaluation: a failed write ends the run here
            save_best(self.env.run_dir, self.cfg, self.model, step, record)
            self.best_fid, self.best_step = fid_sum, step
        record["seconds"] = round(time.perf_counter() - t0, 3)
        lines = "; ".join(q.line(k) for k, q in results.items())
        verdict = f"best: {self.best_fid:.3f} at step {self.best_step}"
        verdict = f"the best, saved as {BEST_NAME}" if best else verdict
        log(f"eval at step {step}: {lines}; FID sum {fid_sum:.3f} ({verdict}); {record['seconds']:.1f} s")
        return record


def open_evaluator(
    cfg: TrainConfig, env: RunEnv, model: GANModel, held: HeldOut | None, resumed: bool
) -> Evaluator | None:
    """Rank 0's Evaluator with --eval-every (None on the other ranks, and without it). A problem found
    while setting it up (no Inception weights, an unreadable real image) is every rank's one error line:
    a rank left waiting in a collective for a rank that has stopped would wait until its timeout."""
    if not parse_eval_every(cfg.run.eval_every)[0]:
        return None
    evaluator, error = None, None
    if env.dist.is_main:
        try:
            evaluator = Evaluator(cfg, env, model, held, resumed)
        except UserError as e:
            error = str(e)
    error = broadcast_object(error, env.dist)
    if error is not None:
        raise UserError(error)
    return evaluator
