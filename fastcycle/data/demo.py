"""The built-in demo dataset: photographs whose true A -> B mapping is known, so quality is measurable.

Domain A is 80x80 tiles of the colour photographs that scikit-image ships inside its wheel (no
download). Domain B is other, disjoint tiles of the same photographs under a fixed colour/tone
transform `f`. Held-out tiles (`testA`) and their images under f (`testB`, the ground truth) measure
how close a trained G_AB comes to f, against the untranslated images as the baseline: by PSNR against
f(a), which only a demo can measure, and by FID and KID against testB, which any dataset can (the
number a user's own run reports, here beside the ground truth that explains it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fastcycle.atomic import write_folder_atomic
from fastcycle.data.folders import convert_channels, list_images
from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.errors import UserError
from fastcycle.models import eval_mode
from fastcycle.quality.distances import Quality, compare, statistics
from fastcycle.quality.features import inception_features
from fastcycle.quality.inception import InceptionV3
from fastcycle.quality.realsets import real_features
from fastcycle.quality.weights import find, load_inception
from fastcycle.runner import run_padded

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "ihc.png")
TILE = 80  # tile side; training crops 64x64 out of it (random crop = more distinct samples)
VERSION = "2"  # bump when the tiles or f change, so stale demo folders are rebuilt
DESCRIPTION = "scikit-image photo tiles; B = A under a fixed colour/tone transform f"

# f: a warm colour grade made of per-channel tone curves: red lifted (gamma 0.5), green kept, blue
# crushed (gamma 2). Far from the identity (the untranslated baseline is 17.0 dB), yet smooth,
# monotone per channel and invertible, so unpaired tiles determine it: matching B's colour
# distribution leaves no other simple map, unlike, say, a channel permutation, which a CycleGAN
# can confuse with another permutation of similar statistics.
_GAMMA = np.array([0.5, 1.0, 2.0], np.float32)


def f(rgb: np.ndarray) -> np.ndarray:
    """The demo's true A -> B map on uint8 (..., 3) images."""
    x = (rgb.astype(np.float32) / 255.0) ** _GAMMA
    return (x * 255.0 + 0.5).astype(np.uint8)


def _photos() -> list[np.ndarray]:
    import skimage  # deferred: only the demo needs it

    folder = Path(skimage.__file__).parent / "data"
    return [np.asarray(Image.open(folder / name).convert("RGB")) for name in PHOTOS]


def _tiles(photo: np.ndarray):
    """Non-overlapping TILE x TILE tiles with their (row, col) grid position."""
    h, w = photo.shape[:2]
    for r in range(h // TILE):
        for c in range(w // TILE):
            yield r, c, photo[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]


def build(root: Path) -> Path:
    """Write trainA/, trainB/, testA/, testB/ under `root` (once; reused while VERSION matches)."""
    root = Path(root)
    marker = root / ".fastcycle-demo"
    if marker.exists() and marker.read_text() == VERSION:
        return root
    return write_folder_atomic(root, _write_tiles)


def _write_tiles(folder: Path) -> None:
    """trainA/, trainB/, testA/, testB/ and, last, the version marker into `folder`."""
    for d in ("trainA", "trainB", "testA", "testB"):
        (folder / d).mkdir()
    for p, photo in enumerate(_photos()):
        for r, c, tile in _tiles(photo):
            # A lattice over the grid: neighbouring tiles go to different splits, so every split
            # sees every photo, and no pixel is in two splits. 2/5 A, 2/5 B, 1/5 held out.
            split = (r + 2 * c) % 5
            name = f"p{p}_r{r:02d}_c{c:02d}.png"
            if split < 2:
                Image.fromarray(tile).save(folder / "trainA" / name)
            elif split < 4:
                Image.fromarray(f(tile)).save(folder / "trainB" / name)
            else:
                Image.fromarray(tile).save(folder / "testA" / name)
                Image.fromarray(f(tile)).save(folder / "testB" / name)
    (folder / ".fastcycle-demo").write_text(VERSION)  # last: a folder with the marker is complete


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8 (N, C, H, W) images, peak 255."""
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def _tiles_as(images: np.ndarray, nc: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, nc, H, W), converted as the loaders convert files (luminance for 1)."""
    return torch.from_numpy(np.stack([convert_channels(x, nc)[0] for x in images])).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class HeldOut:
    """The held-out tiles as each side of the evaluation sees them: (N, C, H, W) uint8 on the CPU.
    input_nc, output_nc: a grayscale model's a is the tiles' luminance, its f(a) that of f's colours."""

    a: torch.Tensor  # testA in the generator's input_nc
    fa: torch.Tensor  # f(a), the truth (testB's pixels), in output_nc
    a_out: torch.Tensor  # a in output_nc: the untranslated baseline
    paths_A: list[Path]  # testA's files, in the tiles' order
    paths_B: list[Path]  # testB's: the same names, f of each


def held_out(root: Path, input_nc: int = 3, output_nc: int = 3) -> HeldOut:
    """testA and testB of the demo folder `root` (demo.build), read as the evaluation compares them."""
    paths = list_images(Path(root) / "testA")
    rgb = np.stack([np.array(Image.open(p).convert("RGB")) for p in paths])  # (N, H, W, 3)
    a, fa, a_out = _tiles_as(rgb, input_nc), _tiles_as(f(rgb), output_nc), _tiles_as(rgb, output_nc)
    return HeldOut(a, fa, a_out, paths, [Path(root) / "testB" / p.name for p in paths])


@torch.no_grad()
def translate_tiles(
    G_AB: nn.Module, a: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """G_AB(a), (N, output_nc, H, W) uint8 on the CPU, 16 tiles at a time. The tiles are padded to the
    generator's size multiple (a U-Net's 128 or 256) and its output cropped back, as translate does."""
    outs = []
    with eval_mode(G_AB):
        for chunk in a.split(16):
            x = to_model_range(chunk.to(device))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outs.append(to_uint8(run_padded(G_AB, x, G_AB.spec.size_multiple)).cpu())
    return torch.cat(outs)


def psnr_scores(held: HeldOut, fake: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR in dB over the held-out tiles of (G_AB(a), f(a)) and of (a, f(a))."""
    return psnr(fake, held.fa).mean().item(), psnr(held.a_out, held.fa).mean().item()


def evaluate(
    G_AB: nn.Module,
    root: Path,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    input_nc: int = 3,
    output_nc: int = 3,
) -> tuple[float, float]:
    """psnr_scores of G_AB's translations of the held-out tiles."""
    held = held_out(root, input_nc, output_nc)
    return psnr_scores(held, translate_tiles(G_AB, held.a, device, amp_dtype))


# ---- FID and KID ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoQuality:
    """FID and KID against testB of G_AB(testA) and of testA itself, or why they were not measured."""

    translated: Quality | None = None
    untranslated: Quality | None = None  # doing nothing: what a translation must beat
    skipped: str = ""  # one line: why there are no numbers (no Inception weights to be had)

    def lines(self) -> list[str]:
        if self.translated is None or self.untranslated is None:
            return [f"FID/KID not measured: {self.skipped}"]
        return [
            self.translated.line("G_AB(testA) vs testB"),
            self.untranslated.line("untranslated testA vs testB"),
        ]


def extractor(device: torch.device) -> tuple[InceptionV3, str]:
    """The checked Inception network on `device` and its weights' SHA-256 (the real sets' cache key);
    UserError when no weights can be found or downloaded."""
    weights = find()
    return load_inception(weights, device), weights.sha256  # found above: not hashed again


def hwc(images: torch.Tensor | list[torch.Tensor]) -> list[np.ndarray]:
    """(N, C, H, W) uint8, or a list of (C, H, W) of any sizes -> (H, W, C) arrays, as features take."""
    return [np.ascontiguousarray(x.permute(1, 2, 0).numpy()) for x in images]


def fid_scores(
    held: HeldOut, fake: torch.Tensor, device: torch.device, inception: tuple[InceptionV3, str] | None = None
) -> DemoQuality:
    """FID and KID of G_AB(testA) (`fake`, translate_tiles') and of the untranslated testA against
    testB, the Inception network on `device` (inception: extractor(device)'s, when already at hand)."""
    try:
        net, sha = inception or extractor(device)
    except UserError as e:  # the run itself succeeded: its report says what is missing, not a failure
        return DemoQuality(skipped=str(e))
    nc = held.fa.shape[1]
    if nc == 3:  # testB's and testA's files are these very pixels: their features come from the cache
        real, base = (real_features(p, net, sha)[0] for p in (held.paths_B, held.paths_A))
    else:
        real, base = (inception_features(hwc(x), net) for x in (held.fa, held.a_out))
    fake_features = inception_features(hwc(fake), net)
    stats = statistics(real)  # shared by both comparisons
    return DemoQuality(compare(fake_features, real, stats), compare(base, real, stats))


def psnr_line(translated: float, untranslated: float) -> str:
    return f"PSNR G_AB(a) vs f(a): {translated:.1f} dB | untranslated a vs f(a): {untranslated:.1f} dB"
