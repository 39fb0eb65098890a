"""SIGINT and SIGTERM ask a run to stop after the current step and save: a graceful stop for Ctrl-C and
for schedulers' preemption notices. A second SIGINT interrupts at once."""

from __future__ import annotations

import signal
import threading

import torch

from fastcycle.ranks import DistInfo
from fastcycle.train.distributed import any_rank


class StopSignals:
    """Within the block, SIGINT and SIGTERM are recorded (`received`) instead of ending the process."""

    def __init__(self, dist: DistInfo, device: torch.device, agree_every: int):
        self.dist, self.device, self.agree_every = dist, device, agree_every
        self.received: str | None = None  # "SIGINT" or "SIGTERM"
        self._old = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def stop_now(self, step: int) -> bool:
        """Whether the run stops after `step`. Ranks must stop at the same step (or the next all-reduce
        waits forever): under torchrun they agree every `agree_every` steps, at the log lines, a sync
        point already; a single process stops at once."""
        if not self.dist.enabled:
            return self.received is not None
        if step % self.agree_every:
            return False
        return bool(any_rank(self.received is not None, self.dist, self.device))
