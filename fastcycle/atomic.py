"""Atomic writes: a temporary file (or folder) beside the target, renamed over it once complete, so a
reader, or a crash at any moment, sees the old target or the whole new one, never half of one.

What is fsynced, the one rule: a durable write (the default) fsyncs the temporary file before the
rename and the folder after it, so that after a power loss, too, the target is the old file or the whole
new one and the rename itself is on disk. Checkpoints, exports, metrics and reports are durable: a run
or an export cannot cheaply make them again. Images (translate's outputs, sample grids, thumbnails, the
demo's tiles) are not (durable=False): they are many and small and a rerun makes them again, and the two
fsyncs cost ~8 ms per 256x256 PNG on this project's ext4 disks (12-16 ms to encode and write it), which
would cut translate's encode threads to about two thirds of their rate. Images keep the rename, which is
what a killed process (Ctrl-C, SIGKILL) or a failed write (a full disk) would otherwise break.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path


def write_atomic(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    *,
    suffix: str = "",
    durable: bool = True,
    before_rename: Callable[[], object] | None = None,
) -> Path:
    """write(tmp) into a temporary file in the same folder (so the rename is atomic), then rename it to
    `path`; on any failure the temporary file is removed and `path` is untouched. Returns `path`.

    suffix: the end of the temporary file's name, for a library that insists on one (AOTInductor: .pt2).
    durable: fsync the file and the folder (the module's rule says which writes are).
    before_rename: called once the new file is whole (and on disk), just before it is renamed over `path`:
    the checkpoint moves the current file aside there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Process and thread in the name: translate's encode threads and the gallery write concurrently.
    # remove_leftovers reads this name back (_LEFTOVER).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp{suffix}")
    try:
        write(tmp)
        if durable:
            _fsync(tmp)  # the bytes first: the rename must not reach the disk before them
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)  # the rename itself
    return path


# write_atomic's temporary name, which a killed process (SIGKILL, a lost node) leaves behind.
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.\d+\.\d+\.tmp.*")


def remove_leftovers(targets: Iterable[Path]) -> int:
    """Remove the temporary files that write_atomic left beside `targets` when killed mid-write (never a
    target: a target is only ever whole); returns how many. Only those of `targets`: a temporary file of
    another target may belong to a write still running in another process."""
    by_folder: dict[Path, set[str]] = {}
    for target in targets:
        by_folder.setdefault(target.parent, set()).add(target.name)
    removed = 0
    for folder, names in by_folder.items():
        for tmp in folder.glob(".*.tmp*") if folder.is_dir() else ():
            m = _LEFTOVER.fullmatch(tmp.name)
            if m and m["name"] in names and tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)  # a folder opens read-only only; POSIX fsync needs no write access
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder_atomic(
    path: str | os.PathLike, write: Callable[[Path], object], *, durable: bool = False
) -> Path:
    """write(tmp) fills a new temporary folder beside `path`, which then takes `path`'s place. On any
    failure the temporary folder is removed and `path` is untouched. Returns `path`.

    An old `path` is renamed aside first and removed only once the new folder is in its place (a rename
    cannot replace a folder that holds files): a crash at any moment leaves the old folder whole, the new
    one whole, or none at `path` (the old one beside it), never a half-deleted one.
    durable: fsync every file and folder of the new tree, and the parent after the renames (an export:
    a model repository); the default is not durable, for folders of images (the module's rule)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp: a new, empty folder, whatever an earlier crash left beside `path`.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None  # where the old `path` waits, once renamed aside
    try:
        write(tmp)
        if durable:
            for folder, _, files in os.walk(tmp, topdown=False):  # the files before their folder
                for name in files:
                    _fsync(Path(folder) / name)
                _fsync(Path(folder))
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)  # over the empty folder mkdtemp made: a rename may replace an empty one
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)  # the new folder never arrived: the old one goes back
        raise
    if durable:
        _fsync(path.parent)  # both renames
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path
