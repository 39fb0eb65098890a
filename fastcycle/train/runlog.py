"""The lines a run prints: to the terminal (above the progress bar) and, with a timestamp, to the run
folder's train.log. Under torchrun rank 0 alone prints. The training modules call `log`; `run_log`
makes a run's log the current one for the duration of the run."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from fastcycle.errors import UserError


class RunLog:
    def __init__(self, is_main: bool = True):
        self.is_main = is_main
        self.file: TextIO | None = None

    def open(self, run_dir: Path) -> None:
        """Create the run folder (every rank) and append to its train.log (rank 0)."""
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if self.is_main:
                self.file = (run_dir / "train.log").open("a")
        except OSError as e:
            raise UserError(f"cannot write to {run_dir} ({e.strerror}); choose a writable --out") from None

    def __call__(self, msg: str, to_terminal: bool = True) -> None:
        if not self.is_main:
            return
        if to_terminal:
            tqdm.write(msg, file=sys.stderr)
        if self.file is not None:
            self.file.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


_current = RunLog()  # outside a run: the terminal only


def log(msg: str, to_terminal: bool = True) -> None:
    """One line to the terminal and the current run's train.log; to_terminal=False: the log alone."""
    _current(msg, to_terminal)


@contextmanager
def run_log(is_main: bool) -> Iterator[RunLog]:
    """A run's log, current within the block (open() it once the run folder may be created)."""
    global _current
    previous, _current = _current, RunLog(is_main)
    try:
        yield _current
    finally:
        _current.close()
        _current = previous
