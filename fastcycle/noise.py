"""Noise files of `fastcycle sample`: `.npy` float32 arrays of shape (k, nz), one noise vector a row.

Sampled noise is keyed on a seed alone, so a grid's tile i has the same noise whatever the grid's size;
rows are picked from a grid by position (`select_noise`) into concept files. Files are written
atomically; a file that is missing, unreadable, of the wrong shape or length, or holds NaN/inf is one
UserError naming the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError


def save_noise(path: str | os.PathLike, z: np.ndarray) -> Path:
    """Write noise vectors, (k, nz) or one (nz,) vector, as a float32 (k, nz) `.npy` file, atomically
    (parent folders are created). Returns the path written."""
    arr = np.asarray(z, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"noise must be (k, nz) with k, nz >= 1, got shape {np.shape(z)}")
    if not np.isfinite(arr).all():
        raise ValueError("noise holds non-finite values")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a bare name
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)

    return write_atomic(path, write)


def load_noise(path: str | os.PathLike, nz: int) -> np.ndarray:
    """The (k, nz) float32 noise vectors of a `.npy` file (k >= 1); a UserError naming the problem when
    the file is missing, unreadable, of the wrong shape or length, or holds NaN/inf."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"noise file {path} does not exist; check the name (`fastcycle sample` writes one)")
    if path.is_dir():
        raise UserError(f"noise file {path} is a folder; give a .npy file")
    try:
        obj = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is not a readable .npy noise file ({first}); write it with np.save"
        ) from None
    if not isinstance(obj, np.ndarray):  # an .npz archive
        obj.close()
        raise UserError(f"{path} is an .npz archive, not a .npy array; save one (k, {nz}) array with np.save")
    arr = obj
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise UserError(f"{path} holds {arr.dtype} values, not numbers; a noise file holds float32 vectors")
    if arr.ndim == 4 and arr.shape[2:] == (1, 1):  # the generator's own (k, nz, 1, 1) input shape
        arr = arr.reshape(arr.shape[:2])
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UserError(
            f"{path} holds an array of shape {arr.shape}; a noise file holds (k, {nz}) vectors, k >= 1"
        )
    if arr.shape[1] != nz:
        raise UserError(
            f"{path} holds {arr.shape[1]}-long vectors but this generator takes {nz}; use noise sampled "
            "for this generator (`fastcycle sample` writes it beside its grid)"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: inf, refused below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise UserError(f"{path} holds {bad} non-finite values (NaN or inf); regenerate or fix the file")
    return arr


def sample_noise(n: int, nz: int, seed: int) -> np.ndarray:
    """(n, nz) float32 standard-normal noise from a numpy Generator keyed on `seed`. Rows do not depend on
    n: the first k rows for n > k are the noise for n = k, so a grid's tile i has the same noise whatever
    the grid's size."""
    if n < 1:
        raise UserError(f"--n must be positive, got {n}")
    if seed < 0:
        raise UserError(f"--seed must be zero or more, got {seed}")
    return np.random.default_rng(seed).standard_normal((n, nz), dtype=np.float32)


def select_noise(z: np.ndarray, indices: str) -> np.ndarray:
    """Rows of `z` by a comma-separated list of 0-based indices ("3,7,12"): the tiles of a grid in
    row-major order. Repeats are kept (a repeated exemplar weighs more in the concept's mean)."""
    parts = [p.strip() for p in str(indices).split(",")]
    if not indices or not str(indices).strip() or any(not p.isdigit() for p in parts):
        raise UserError(
            f"--select {indices!r}: give tile numbers separated by commas, e.g. 3,7,12 (0-based, "
            "row by row as in the grid)"
        )
    picked = [int(p) for p in parts]
    out_of_range = [i for i in picked if i >= len(z)]
    if out_of_range:
        raise UserError(
            f"--select {indices!r}: tile {out_of_range[0]} is out of range; the grid has tiles "
            f"0 to {len(z) - 1}"
        )
    return np.ascontiguousarray(z[picked], dtype=np.float32)
