"""Atomic file writes: write a temporary file beside the target, then rename it over the target, so a
reader, or a crash at any moment, sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """write(tmp) into a temporary path in the same folder (so the rename is atomic), then rename it to
    `path`; on any failure the temporary file is removed and `path` is untouched. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Process and thread in the name: translate's encode threads and the gallery write concurrently.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
