"""Which image, crop and flip each position of an epoch gets, and which positions a rank gets.

Unpaired data (`epoch_plan`): an epoch is max(|A|, |B|) positions. Each domain is read in its own
shuffled order (a fresh permutation for every pass, so the smaller domain wraps around and every image
is seen once per pass), as two independent file readers would; `--serial-batches` pairs A[i] with
B[i mod |B|] in file order, as the reference does. Everything is keyed on (seed, epoch) alone, never on
worker or process state, so any number of workers or ranks and a resume mid-epoch all see the same data.

One list of items (`item_plan`: pix2pix's pairs, DCGAN's images): a shuffled order of the items (file
order with `--serial-batches`) and three uniforms per position (crop x, crop y, flip), both sides of a
pair sharing them.

The reference draws B with replacement (`random.randint`); drawing it without replacement per pass
keeps the same marginal distribution and is what makes disjoint per-rank shards possible.

Sharding for DDP: global batch s is positions [s*b*W, (s+1)*b*W), and rank r takes its r-th slice of
b. So W ranks at batch b see exactly the batches one process at batch b*W sees, split in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class EpochPlan:
    a: np.ndarray  # (n,) int64: index into the A files for each position
    b: np.ndarray  # (n,) int64: index into the B files
    u: np.ndarray  # (n, 6) float64 in [0, 1): A crop x, A crop y, A flip, B crop x, B crop y, B flip


def _order(rng: np.random.Generator, size: int, n: int, shuffle: bool) -> np.ndarray:
    passes = -(-n // size)
    if not shuffle:
        return np.tile(np.arange(size), passes)[:n]
    return np.concatenate([rng.permutation(size) for _ in range(passes)])[:n]


@lru_cache(maxsize=2)  # each worker process rebuilds the current epoch's plan once, not per item
def epoch_plan(seed: int, epoch: int, n_A: int, n_B: int, shuffle: bool) -> EpochPlan:
    n = max(n_A, n_B)
    # Three independent streams, so A's order does not change when B's folder does.
    rng_A, rng_B, rng_u = (np.random.default_rng((seed, epoch, k)) for k in range(3))
    return EpochPlan(_order(rng_A, n_A, n, shuffle), _order(rng_B, n_B, n, shuffle), rng_u.random((n, 6)))


@dataclass(frozen=True)
class ItemPlan:
    order: np.ndarray  # (n,) int64: which item each position of the epoch reads
    u: np.ndarray  # (n, 3) float64 in [0, 1): crop x, crop y, flip


@lru_cache(maxsize=2)  # each worker process builds the current epoch's plan once, not per item
def item_plan(seed: int, epoch: int, n: int, shuffle: bool) -> ItemPlan:
    """The epoch's order and uniforms over one list of n items, keyed on (seed, epoch) alone."""
    rng_order, rng_u = (np.random.default_rng((seed, epoch, k)) for k in range(2))
    order = rng_order.permutation(n) if shuffle else np.arange(n)
    return ItemPlan(order.astype(np.int64), rng_u.random((n, 3)))


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Whole global batches per epoch; the remainder is dropped (equal batch shapes, no recompiles)."""
    return n // (batch_size * world_size)


def rank_positions(n: int, batch_size: int, rank: int = 0, world_size: int = 1, start_step: int = 0):
    """(steps, batch_size) int64: the epoch positions of this rank's batches from `start_step` on."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    steps = steps_per_epoch(n, batch_size, world_size)
    s = np.arange(start_step, steps)[:, None]
    return s * batch_size * world_size + rank * batch_size + np.arange(batch_size)[None, :]
