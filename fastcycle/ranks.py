"""A process's place under torchrun, what training and translation share: its rank from the launcher's
environment, its device, its share of a list of work, and a gather of small per-rank results to rank 0.

`torchrun --nproc-per-node N [--nnodes M ...]` starts one process per GPU and sets RANK, WORLD_SIZE and
LOCAL_RANK in each; a process started without it is rank 0 of 1 and nothing here talks to another.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch

from fastcycle.errors import UserError
from fastcycle.runtime import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank within its node: which of the node's GPUs it takes

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes metrics, samples and checkpoints, and prints translate's summary."""
        return self.rank == 0


def from_env() -> DistInfo:
    """This process's rank from torchrun's variables; one process (rank 0 of 1) without them."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise UserError(f"WORLD_SIZE={world_size} without a valid RANK: launch with torchrun ({e})") from None
    return DistInfo(rank, world_size, local_rank)


def rank_device(device_flag: str, info: DistInfo) -> torch.device:
    """The device of --device for this rank: under torchrun every GPU choice (auto on a machine with
    CUDA, cuda, cuda:N) means cuda:LOCAL_RANK, one GPU per process; auto without CUDA, and cpu, the CPU."""
    if not info.enabled:
        return resolve_device(device_flag)
    if device_flag == "cpu" or (device_flag == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve_device(device_flag)  # the one-line error for a bad name or a GPU flag without CUDA
    if info.local_rank >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"LOCAL_RANK {info.local_rank} but only {count} GPU(s): lower --nproc-per-node")
    return torch.device("cuda", info.local_rank)


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's items of a list that every rank holds in the same order: item i goes to rank
    i % world_size. Interleaved rather than in contiguous blocks because sorted file lists cluster (one
    folder of large images, the videos of one name prefix): every rank gets a slice of each cluster, so
    the ranks finish at about the same time."""
    return list(items[info.rank :: info.world_size])


# The gather waits for the slowest rank, which may finish its share hours after the fastest (a long
# video): the timeout only guards against a rank that hangs alive, since a rank that dies closes its
# connections and the others' gather fails at once.
_GATHER_TIMEOUT = timedelta(hours=24)


@contextmanager
def result_group(info: DistInfo) -> Iterator[None]:
    """A gloo process group for gather_to_main while the block runs, destroyed after it. Gloo, on GPUs
    too: it carries a few Python objects once per run, where NCCL would need its GPU buffers and
    streams. Joined before any work so that a rank that fails later is seen by the others' gather
    through its closed connection rather than at a rendezvous that waits for it."""
    import torch.distributed as dist

    if not info.enabled or dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size, timeout=_GATHER_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def gather_to_main(obj: T, info: DistInfo) -> list[T] | None:
    """Every rank's `obj` (any picklable value), in rank order, on rank 0; None on the other ranks."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    box: list[T] | None = [obj] * info.world_size if info.is_main else None  # filled in by the gather
    try:
        dist.gather_object(obj, box, dst=0)
    except RuntimeError as e:  # a rank that stopped on an error of its own closed its connections
        # gloo says "[.../pair.cc:561] Connection closed by peer [addr]:port. This is typically ...".
        first = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip()).split(". ")[0] or type(e).__name__
        raise UserError(
            f"rank {info.rank}: another rank stopped before the end ({first}); its own error says why"
        ) from None
    return box
