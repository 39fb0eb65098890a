"""The engine of `fastcycle sample`: images from a noise-to-image generator (DCGAN), and the DCGAN paper's
vector arithmetic on its noise ("smiling woman - neutral woman + neutral man", Radford et al. 2016).

The generator is any module mapping noise of shape (N, nz, 1, 1) to (N, C, H, W) images in [-1, 1] (C: 3,
or 1 for grayscale) that carries its noise length as the attribute `nz`.

Plain sampling writes the noise beside its grid (fastcycle.noise), so exemplars can be picked from the
grid later (`select_noise`) and saved as concept files; a concept's vector in the arithmetic is the mean
of its file's rows (the paper averages three exemplars a concept, which makes the result far more stable
than single samples).

Every file is written atomically (a temporary file renamed over the target once complete), and nothing is
written before all images are generated, so a failed run leaves no half-written output behind.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcycle.checkpoint import load_checkpoint
from fastcycle.data.folders import write_image
from fastcycle.data.transforms import to_uint8
from fastcycle.errors import UserError
from fastcycle.models import eval_mode
from fastcycle.noise import load_noise, sample_noise, save_noise, select_noise
from fastcycle.runtime import resolve_device
from fastcycle.trained import generator_from_checkpoint

BORDER = 2  # pixels between and around the tiles of a grid, as torchvision's make_grid
JITTER = 0.25  # the paper's uniform noise scale around the arithmetic's result
GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
_ARITH_EXAMPLE = "e.g. 'smiling_woman - neutral_woman + neutral_man'"
# A name: letters, digits, _ . / \ : ~, and hyphens between those ('neutral-woman', a pytest tmp path); a
# '-' touching a space, a '+' or either end of the expression is an operator ('a - b', '-a + b').
_NAME = re.compile(r"[\w./\\:~]+(?:-+[\w./\\:~]+)*")
_TOKEN = re.compile(rf"\s+|{_NAME.pattern}|[+-]|.")


# --- images -----------------------------------------------------------------------------------------------


def _nz(G: nn.Module) -> int:
    nz = getattr(G, "nz", None)
    if not isinstance(nz, int) or nz < 1:
        raise TypeError(f"{type(G).__name__} has no integer `nz` attribute (its noise length)")
    return nz


@torch.no_grad()
def generate(G: nn.Module, z: np.ndarray, device: str | torch.device, batch_size: int = 256) -> np.ndarray:
    """Images of noise vectors: (n, nz) float -> (n, H, W, C) uint8, in eval mode, `batch_size` at a time.
    G's train/eval mode is restored afterwards."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[0] < 1:
        raise ValueError(f"noise must be (n, nz) with n >= 1, got shape {z.shape}")
    nz = getattr(G, "nz", z.shape[1])
    if z.shape[1] != nz:
        raise ValueError(f"noise is {z.shape[1]}-long but the generator takes {nz}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    param = next(G.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    out = []
    with eval_mode(G):
        for i in range(0, len(z), batch_size):
            x = torch.from_numpy(z[i : i + batch_size]).to(device=device, dtype=dtype)
            y = G(x[:, :, None, None])
            if y.ndim != 4 or y.shape[1] not in (1, 3) or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"the generator made {tuple(y.shape)}, not ({x.shape[0]}, 1 or 3, H, W) images"
                )
            out.append(to_uint8(y).permute(0, 2, 3, 1).cpu().numpy())
    return np.ascontiguousarray(np.concatenate(out))


def grid(images: np.ndarray, ncol: int, border: int = BORDER, fill: int = 0) -> np.ndarray:
    """Tile (n, H, W, 3) uint8 images row by row, `ncol` a row (fewer when n is smaller), with a `border`-
    pixel frame of value `fill` around and between tiles: (rows * (H + b) + b, cols * (W + b) + b, 3).
    Grayscale (n, H, W, 1) images (a --output-nc 1 DCGAN's) are shown as gray RGB."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[0] < 1 or images.dtype != np.uint8:
        raise ValueError(f"grid needs (n, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    if ncol < 1:
        raise UserError(f"--ncol must be positive, got {ncol}")
    n, h, w, _ = images.shape
    cols = min(ncol, n)
    rows = -(-n // cols)
    canvas = np.full((rows * (h + border) + border, cols * (w + border) + border, 3), fill, np.uint8)
    for i, img in enumerate(images):
        y = border + (i // cols) * (h + border)
        x = border + (i % cols) * (w + border)
        canvas[y : y + h, x : x + w] = img
    return canvas


def write_grid(path: str | os.PathLike, images: np.ndarray, ncol: int) -> Path:
    """Save `grid(images, ncol)` atomically (format by suffix, PNG by default; parents are created)."""
    path = Path(path)
    write_image(grid(images, ncol), path)
    return path


# --- vector arithmetic ------------------------------------------------------------------------------------


def parse_arith(expr: str) -> list[tuple[int, str]]:
    """'a - b + c' -> [(1, 'a'), (-1, 'b'), (1, 'c')]. Terms are noise-file names (letters, digits,
    _ . / \\ : ~, and hyphens inside a name: 'a-b' is one name, 'a - b' a difference), joined by + and -;
    one leading sign is allowed."""

    def bad(problem: str) -> UserError:
        return UserError(
            f"--arith {expr!r}: {problem}; write noise-file names joined by + and -, {_ARITH_EXAMPLE}"
        )

    terms: list[tuple[int, str]] = []
    sign, op, expect_term = 1, None, True
    for m in _TOKEN.finditer(expr):
        tok = m.group()
        if tok.isspace():
            continue
        if tok in "+-":
            if not expect_term:
                sign, op, expect_term = (1 if tok == "+" else -1), tok, True
            elif terms or op is not None:
                raise bad(f"'{op}' followed by '{tok}' (an empty term)" if op else f"'{tok}' has no term")
            else:  # a leading sign
                sign, op = (1 if tok == "+" else -1), tok
        elif _NAME.fullmatch(tok):
            if not expect_term:
                raise bad(f"{terms[-1][1]!r} and {tok!r} need a + or - between them")
            terms.append((sign, tok))
            sign, op, expect_term = 1, None, False
        else:
            raise bad(f"{tok!r} at position {m.start()} is not allowed in a name or operator")
    if not terms:
        raise bad("no terms")
    if expect_term:
        raise bad(f"it ends with a dangling '{op}'")
    return terms


def term_path(name: str, noise_dir: str | os.PathLike = ".") -> Path:
    """The noise file of an arithmetic term: a name ending in .npy is a path, any other is
    `<noise_dir>/<name>.npy`."""
    if name.lower().endswith(".npy"):
        return Path(name).expanduser()
    return Path(noise_dir) / f"{name}.npy"


def _term_means(terms: list[tuple[int, str]], noise_dir, nz: int) -> list[tuple[np.ndarray, int]]:
    out = []
    for _, name in terms:
        path = term_path(name, noise_dir)
        if "-" in name and not path.exists():
            raise UserError(
                f"noise file {path} does not exist; to subtract, put spaces around the minus "
                f"({name.replace('-', ' - ')!r})"
            )
        z = load_noise(path, nz)
        out.append((z.astype(np.float64).mean(axis=0), len(z)))
    return out


def _combine(terms: list[tuple[int, str]], means: list[tuple[np.ndarray, int]]) -> np.ndarray:
    return np.asarray(sum(s * m for (s, _), (m, _) in zip(terms, means, strict=True)), np.float32)


def arith_vector(terms: list[tuple[int, str]], noise_dir: str | os.PathLike, nz: int) -> np.ndarray:
    """(nz,) float32: the sum over terms of sign * (the mean of the term's noise vectors)."""
    return _combine(terms, _term_means(terms, noise_dir, nz))


def arith_grid(
    G: nn.Module,
    device: str | torch.device,
    terms: list[tuple[int, str]],
    noise_dir: str | os.PathLike = ".",
    *,
    n_variants: int = 7,
    seed: int = 0,
    jitter: float = JITTER,
) -> tuple[np.ndarray, str, np.ndarray]:
    """One row of the paper's figure: a tile for each term (the image of its mean vector), then the
    result's tile and `n_variants` tiles of the result plus uniform noise in [-jitter, jitter] (seeded).
    Returns (images (len(terms) + 1 + n_variants, H, W, 3) uint8, a one-line description, the (nz,)
    float32 result vector)."""
    if n_variants < 0:
        raise UserError(f"--n-variants must be zero or more, got {n_variants}")
    nz = _nz(G)
    means = _term_means(terms, noise_dir, nz)
    result = _combine(terms, means)
    rng = np.random.default_rng(seed)
    variants = result + rng.uniform(-jitter, jitter, (n_variants, nz)).astype(np.float32)
    z = np.concatenate([np.stack([m for m, _ in means]).astype(np.float32), result[None], variants])
    images = generate(G, z, device)
    shown = " ".join(
        f"{'-' if s < 0 else '+' if i else ''} {name} (mean of {k})".strip()
        for i, ((s, name), (_, k)) in enumerate(zip(terms, means, strict=True))
    )
    desc = (
        f"{shown} = result; tiles left to right: the {len(terms)} terms, the result, then {n_variants} "
        f"variants (result + uniform noise within ±{jitter:g}, seed {seed})"
    )
    return images, desc, result


# --- the command ------------------------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


@dataclass
class _Noise:
    """The noise of a plain or `select` run and where it came from."""

    z: np.ndarray  # (n, nz) float32
    source: str  # for the lines: the --noise file, or the seed and --n
    file: Path | None  # the --noise file; None for sampled noise


def run_sample(
    G: nn.Module,
    device: str | torch.device,
    *,
    n: int,
    seed: int,
    out: str | os.PathLike,
    noise: str | os.PathLike | None = None,
    arith: str | None = None,
    noise_dir: str | os.PathLike = ".",
    select: str | None = None,
    save_noise_to: str | os.PathLike | None = None,
    ncol: int = 8,
    n_variants: int = 7,
) -> list[str]:
    """`fastcycle sample`; returns the lines to print. The modes:

    - plain: `n` images of `sample_noise(n, nz, seed)` as a grid at `out`, and their noise at `out` with
      suffix .npy (to pick exemplars from later); `save_noise_to` writes a second copy of the noise;
    - `noise`: the same from a saved noise file (all its vectors; `n` and `seed` are unused);
    - `select` (needs `save_noise_to`): a concept file of the chosen rows of `noise` (or of the sampled
      noise for `n` and `seed`), with a preview grid beside it (suffix .png); `out` is not written;
    - `arith`: the arithmetic row of `arith_grid` as a grid at `out` and the result vector at `out` with
      suffix .npy, a noise file usable with `noise` or as an `arith` term.

    Parent folders are created; every file is written atomically, after all images are generated.
    """
    out = Path(out)
    if out.suffix.lower() not in GRID_SUFFIXES:
        raise UserError(f"--out {out} must name an image file ({', '.join(GRID_SUFFIXES)}), e.g. samples.png")
    if ncol < 1:
        raise UserError(f"--ncol must be positive, got {ncol}")
    nz = _nz(G)
    if arith is not None:
        for flag, value in (("--noise", noise), ("--select", select), ("--save-noise-to", save_noise_to)):
            if value is not None:
                raise UserError(f"--arith and {flag} do not go together; run them as separate commands")
        terms = parse_arith(arith)
        _check_result_is_no_term(out, terms, noise_dir)
        images, desc, result = arith_grid(G, device, terms, noise_dir, n_variants=n_variants, seed=seed)
        return _save_arith(out, images, desc, result)
    if noise is not None:
        drawn = _Noise(load_noise(noise, nz), f"{noise}", Path(noise))
    else:
        drawn = _Noise(sample_noise(n, nz, seed), f"seed {seed}, --n {n}", None)
    if select is None:
        return _sample_plain(G, device, drawn, out, save_noise_to, ncol)
    if save_noise_to is None:
        raise UserError("--select needs --save-noise-to CONCEPT.npy, the file to write the chosen vectors to")
    return _sample_select(G, device, drawn, select, Path(save_noise_to), ncol)


def _check_result_is_no_term(out: Path, terms: list[tuple[int, str]], noise_dir: str | os.PathLike) -> None:
    """`arith` mode writes its result vector to `out` with suffix .npy: never over one of its terms."""
    out_npy = out.with_suffix(".npy")
    for _, name in terms:
        path = term_path(name, noise_dir)
        if path.exists() and _same_file(path, out_npy):
            raise UserError(
                f"--out {out} would overwrite {path}, a term of --arith, with the result; "
                "choose another --out"
            )


def _save_arith(out: Path, images: np.ndarray, desc: str, result: np.ndarray) -> list[str]:
    """`arith` mode's files: the row of arith_grid's images at `out`, the result vector beside it (.npy)."""
    out_npy = out.with_suffix(".npy")
    save_noise(out_npy, result)
    write_grid(out, images, len(images))
    return [
        desc,
        f"wrote {out}: one row of {len(images)} tiles",
        f"wrote {out_npy}: the result vector, reusable with --noise or as an --arith term",
    ]


def _sample_select(
    G: nn.Module, device: str | torch.device, noise: _Noise, select: str, concept: Path, ncol: int
) -> list[str]:
    """run_sample's `select` mode: the chosen rows of the noise as a concept file, their grid beside it."""
    if noise.file is not None and _same_file(concept, noise.file):
        raise UserError(f"--save-noise-to {concept} is the --noise file itself; choose another name")
    picked = select_noise(noise.z, select)
    preview = concept.with_suffix(".png")
    images = generate(G, picked, device)
    save_noise(concept, picked)
    write_grid(preview, images, ncol)
    return [
        f"wrote {concept}: {len(picked)} vectors (tiles {select} of {noise.source}), "
        "usable as an --arith term",
        f"wrote {preview}: their images",
    ]


def _sample_plain(
    G: nn.Module,
    device: str | torch.device,
    noise: _Noise,
    out: Path,
    copy: str | os.PathLike | None,
    ncol: int,
) -> list[str]:
    """run_sample's plain and `noise` modes: the grid of the noise at `out`, the noise beside it (.npy),
    and a second copy of it at `copy` (--save-noise-to)."""
    out_npy = out.with_suffix(".npy")
    z = noise.z
    images = generate(G, z, device)
    cols = min(ncol, len(z))
    rewrite = noise.file is None or not _same_file(out_npy, noise.file)  # not the --noise file over itself
    if rewrite:
        save_noise(out_npy, z)
    write_grid(out, images, ncol)
    lines = [
        f"wrote {out}: {len(z)} samples ({noise.source}), {cols} a row; tile i is at row i // {cols}, "
        f"column i % {cols} (0-based)",
        f"{'wrote' if rewrite else 'kept'} {out_npy}: their noise; make a concept file with "
        f"--noise {out_npy} --select I,J,K --save-noise-to CONCEPT.npy",
    ]
    if copy is not None:
        save_noise(copy, z)
        lines.append(f"wrote {copy}: a copy of the noise")
    return lines


def sample_checkpoint(checkpoint: str, device: str, **options: Any) -> list[str]:
    """`fastcycle sample --checkpoint`: run_sample(**options) with the generator of a --model dcgan run
    on `device` (cuda, cuda:N, cpu or auto); UserError for a run of another family."""
    state = load_checkpoint(checkpoint)
    family = state["config"]["model"].get("model", "cycle_gan")
    if family != "dcgan":
        raise UserError(f"{checkpoint} is a {family} run; `fastcycle sample` needs a --model dcgan run")
    G = generator_from_checkpoint(state, "AtoB", "torch", str(checkpoint)).eval()
    return run_sample(G, resolve_device(device), **options)
