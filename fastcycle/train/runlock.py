"""One run per folder: `fastcycle train` holds an exclusive OS file lock on `<run>/run.lock` for its life.

Two runs writing one folder (a requeued job whose old copy is still shutting down, a double launch)
would overwrite each other's checkpoints and interleave their metrics. The lock is `flock(2)` on
run.lock, taken before the folder's checkpoints are looked at and held until `train` returns; a second
run on the folder ends at once with one line naming the holder's PID and host, which the holder writes
into the file. The kernel drops the lock when the holding process dies, however it dies, so a SIGKILLed
run leaves no stale lock and the next start takes the folder over at once. The file stays when the run
ends: deleting it could let two runs lock two different files of the same name.

Processes forked by the run (DataLoader workers) would inherit the lock and hold it past a SIGKILL of
the run until they notice; they close their copy right after the fork. Under torchrun rank 0 alone
locks, and every rank gets its verdict (fastcycle.train.loop). `translate`, `export` and `plot` only
read a run folder (its checkpoints are replaced atomically) and take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from fastcycle.errors import UserError

LOCK_NAME = "run.lock"
_held: set[int] = set()  # descriptors this process holds locks through


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)  # the parent's descriptor still holds the lock; the child's copy must not
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _holder(path: Path) -> str:
    """'PID 123 on host x' from the lock file; the holder writes it just after locking, so wait briefly."""
    for _ in range(20):
        try:
            fields = path.read_text().split()
        except OSError:
            fields = []
        if len(fields) >= 2:
            return f"PID {fields[0]} on host {fields[1]}"
        time.sleep(0.05)
    return "a process that has not said who it is"


class RunLock:
    """Exclusive lock on a run folder (created if need be); a context manager, released on exit."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.note = ""  # a remark for the run log (a filesystem without locks)

    def acquire(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(
                f"cannot write to {self.run_dir} ({e.strerror}); choose a writable --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(
                    f"{self.run_dir} is in use by another training run ({_holder(self.path)}); wait for it "
                    "to end or stop it, or choose another --out"
                ) from None
            # A filesystem without locks (some network mounts): train on, but say what is unguarded.
            self.note = f"run lock: {self.path} cannot be locked ({e.strerror}); nothing stops a second run"
            return self
        self.fd = fd
        _held.add(fd)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0
        )
        return self

    def release(self) -> None:
        if self.fd is not None:
            _held.discard(self.fd)
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
