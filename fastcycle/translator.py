"""Translate images of any kind and any size with a trained generator: the object behind the Python API
(`fastcycle.load_translator`) and behind `fastcycle translate`, whose folder and video pipelines feed it
batches of decoded frames.

It takes PIL images, (H, W, C) or (H, W) uint8/uint16 NumPy arrays and tensors, converts channels to
what the generator takes, scales 8- or 16-bit pixels to the generators' [-1, 1], resizes when asked
(--load-size/--max-side, and back with --keep-size), pads to the generator's size multiple, and runs the
batch whole when its estimated peak memory fits the memory limit, in smaller batches when one image
fits, and otherwise tiled with whole-image instance-norm statistics (fastcycle.tiling), so an image of
any size gives the whole-image result. Opening a backend is the export layer's
(fastcycle.export.translator); this module runs any fastcycle.runner.Runner.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from fastcycle.data.transforms import to_model_range, to_pixels, to_uint8
from fastcycle.errors import UserError
from fastcycle.runner import Runner, run_padded
from fastcycle.tiling.memory import format_bytes

if TYPE_CHECKING:
    from PIL import Image

    from fastcycle.tiling import Program, SegmentBackend

_BITS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}  # the array dtypes taken, and their depth
# Precisions whose significand cannot carry 16-bit pixels (bf16: 8 bits, fp16: 11 bits).
_REDUCED = ("bf16", "fp16")
SHAPES_KEPT = 256  # (batch, height, width) shapes whose memory estimate is kept


@dataclass
class TranslateOptions:
    """How images are sized and run; the CLI's --memory-limit, --tile, ... (help: fastcycle.cli)."""

    memory_limit: int | None = None  # bytes a pass may use; None: free CUDA memory, or half the free RAM
    tile: int | None = None  # tile side in pixels: always tile (None: tile only when a pass does not fit)
    tile_overlap: int | None = None  # context each tile reads, full-resolution pixels (None: exact halo)
    load_size: int | None = (
        None  # scale the width to this first, keeping the aspect (the reference's scale_width)
    )
    max_side: int | None = None  # scale down so that the longer side is at most this
    keep_size: bool = False  # resize each translation back to its input's size
    output_bits: int | None = None  # 8 or 16 bits per channel (None: the input's)
    scratch_dir: str | None = None  # where tiled inference keeps activations between layers

    def __post_init__(self) -> None:
        for name in ("memory_limit", "tile", "load_size", "max_side"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise UserError(f"--tile-overlap must be >= 0, got {self.tile_overlap}")
        if self.output_bits not in (None, 8, 16):
            raise UserError(f"--output-bits must be 8 or 16, got {self.output_bits}")


def default_memory_limit(device: torch.device) -> int:
    """The free memory of a CUDA device, or half of the free RAM on a CPU (the rest is the OS's, the
    decode/encode threads' and the page cache's)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // 2
    except (OSError, KeyError, ValueError):
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


class Translator:
    """A trained generator that translates images of any size and kind.

    runner: any fastcycle.runner.Runner. program, segments: the generator as a layer program and how its
    segments run (fastcycle.tiling), which estimate a pass's memory and tile what does not fit; None for
    exported files that hold no program (.pt2, .plan), which then always run whole. say: where the
    one-line decisions go (whole or tiled, and why; channel conversions), once each.
    """

    def __init__(
        self,
        runner: Runner,
        options: TranslateOptions | None = None,
        *,
        program: Program | None = None,
        segments: SegmentBackend | None = None,
        say: Callable[[str], None] | None = None,
    ):
        self.runner, self.options = runner, options or TranslateOptions()
        self.program, self.segments = program, segments
        self.say = say or (lambda line: print(line, file=sys.stderr))
        self.memory_limit = self.options.memory_limit or default_memory_limit(runner.device)
        self._said: set[str] = set()
        self._tiled: Any = None
        self._bytes: OrderedDict[tuple[int, int, int], int] = OrderedDict()  # (n, h, w) -> whole_image_bytes

    @property
    def input_nc(self) -> int:
        return self.runner.input_nc

    @property
    def output_nc(self) -> int:
        return self.runner.output_nc

    @property
    def note(self) -> str:
        return self.runner.note

    # --- the Python API: any image kind in, the same kind out ------------------------------------------

    def __call__(self, images: Any) -> Any:
        """Translate one image or a list: PIL images, (H, W[, C]) uint8/uint16 arrays, or tensors, float
        (C, H, W) / (N, C, H, W) in [-1, 1] or uint8 pixels. Each comes back as the kind it went in,
        at its own size (or the resized one, without keep_size)."""
        if isinstance(images, list | tuple):
            return [self(image) for image in images]
        if isinstance(images, torch.Tensor):
            return self._tensor(images)
        if isinstance(images, np.ndarray):
            out = self.translate_arrays([images])[0]
            return out[..., 0] if images.ndim == 2 and out.shape[-1] == 1 else out
        return self._pil(images)

    def _pil(self, image: Image.Image) -> Image.Image:
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(
                f"cannot translate a {type(image).__name__}: pass a PIL image, a NumPy array or a tensor"
            )
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            arr = np.asarray(image).astype(np.uint16)
        elif image.mode in ("L", "RGB"):
            arr = np.asarray(image)
        else:
            arr = np.asarray(image.convert("RGB"))
        out = self.translate_arrays([arr if arr.ndim == 3 else arr[..., None]])[0]
        if out.dtype == np.uint16 and out.shape[2] == 3:
            raise ValueError("PIL holds no 16-bit RGB images: pass a NumPy array, or output_bits=8")
        if out.shape[2] == 1:
            return Image.fromarray(out[..., 0], "I;16" if out.dtype == np.uint16 else "L")
        return Image.fromarray(out)

    def _tensor(self, x: torch.Tensor) -> torch.Tensor:
        batched = x.dim() == 4
        if x.dim() not in (3, 4):
            raise ValueError(f"a tensor image is (C, H, W) or (N, C, H, W), not {tuple(x.shape)}")
        xb = (x if batched else x[None]).detach().to(self.runner.device)
        pixels = xb.dtype == torch.uint8
        xb = to_model_range(xb) if pixels else xb.float()
        y = self.translate_batch(xb, bits=8 if pixels else 16)
        y = (to_uint8(y) if pixels else y).to(x.device)
        return y if batched else y[0]

    # --- the pipelines' entry: decoded arrays ----------------------------------------------------------

    def translate_arrays(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """(H, W, C) uint8 or uint16 arrays -> translated (H', W', output_nc) arrays of the output bit
        depth (--output-bits, else the input's); same-size images run as one batch."""
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, a in enumerate(images):
            groups.setdefault((a.shape, a.dtype.str), []).append(i)
        for idx in groups.values():
            for i, y in zip(idx, self._same_kind([images[i] for i in idx]), strict=True):
                out[i] = y
        return out  # type: ignore[return-value]

    def _same_kind(self, images: list[np.ndarray]) -> list[np.ndarray]:
        first = images[0]
        if first.ndim == 2:
            images = [a[..., None] for a in images]
        if first.dtype not in _BITS or images[0].ndim != 3:
            raise ValueError(
                f"an image array is (H, W, C) or (H, W) of uint8 or uint16, not {first.shape} {first.dtype}"
            )
        in_bits = _BITS[first.dtype]
        out_bits = self.options.output_bits or in_bits
        x = torch.from_numpy(np.stack([self._channels(a) for a in images]))  # (N, H, W, C)
        if x.dtype != torch.uint8:
            x = x.to(torch.int32)  # torch's uint16 has almost no ops
        # Pixels travel to the device as integers and become floats there: 4x fewer bytes to copy (8-bit).
        x = x.to(self.runner.device, non_blocking=True).permute(0, 3, 1, 2)
        y = self.translate_batch(to_model_range(x, in_bits), bits=out_bits)  # (N, C, H, W) in [-1, 1]
        pixels = to_pixels(y, out_bits).permute(0, 2, 3, 1).cpu().numpy()
        return list(pixels.astype(np.uint16, copy=False) if out_bits == 16 else pixels)

    def _channels(self, a: np.ndarray) -> np.ndarray:
        c, want = a.shape[2], self.input_nc
        if c == want:
            return a
        from fastcycle.data.folders import convert_channels

        converted, note = convert_channels(a, want)
        if note:
            self._once(f"images converted for the generator's {want}-channel input: {note}")
        return converted

    # --- float batches: resize, then whole, in smaller batches, or tiled ------------------------------

    @torch.no_grad()
    def translate_batch(self, x: torch.Tensor, bits: int = 8) -> torch.Tensor:
        """(N, input_nc, H, W) float32 in [-1, 1] -> (N, output_nc, H', W') float32 on the same device.
        bits: the output's bit depth, refused on a backend whose precision cannot carry it."""
        if bits > 8 and self.runner.precision in _REDUCED:
            raise UserError(
                f"a 16-bit image and a {self.runner.precision} backend ({self.runner.note}), whose "
                f"{self.runner.precision} arithmetic keeps about 8 significant bits: translate in fp32 "
                "(drop --amp, or export without --fp16) or write 8-bit output (--output-bits 8)"
            )
        if x.shape[1] != self.input_nc:
            raise ValueError(f"the generator takes {self.input_nc} channels, not {x.shape[1]}")
        h, w = x.shape[2:]
        x = self._resize(x, self._target_size(h, w))
        y = self._forward(x)
        if self.options.keep_size and tuple(y.shape[2:]) != (h, w):
            y = self._resize(y, (h, w))
        return y

    def _target_size(self, h: int, w: int) -> tuple[int, int]:
        o = self.options
        if o.load_size:
            h, w = max(1, round(h * o.load_size / w)), o.load_size
        if o.max_side and max(h, w) > o.max_side:
            s = o.max_side / max(h, w)
            h, w = max(1, round(h * s)), max(1, round(w * s))
        return h, w

    @staticmethod
    def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[2:]) == size:
            return x
        # Bicubic with antialiasing: torch's antialiased resampling is written to match PIL's BICUBIC,
        # which the reference's scale_width uses, and works on 16-bit data and on any channel count.
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(-1, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole when the batch's pass fits the limit, in smaller batches when one image does, else
        tiled one image at a time; each decision said once, with its reason."""
        n, _, h, w = x.shape
        m, limit = self.runner.size_multiple, format_bytes(self.memory_limit)
        if self.options.tile is not None:
            return self._tiles(x, f"{w}x{h}: tiled (--tile {self.options.tile})")
        if self.program is None:  # an exported file without a layer program: nothing to estimate with
            return self._whole(x)
        hp, wp = h + -h % m, w + -w % m
        need, per = self._whole_bytes(n, hp, wp), self._whole_bytes(1, hp, wp)
        need_s = format_bytes(need)
        if need <= self.memory_limit:
            # Said once, for the first shape: a server sees as many shapes as its clients send.
            self._once(
                f"images run whole while a pass fits --memory-limit {limit} ({w}x{h} x{n}: ~{need_s})",
                "whole",
            )
            return self._whole(x)
        if per <= self.memory_limit:
            k = max(1, int(self.memory_limit // per))
            self._once(f"{w}x{h}: {k} per pass (~{format_bytes(per)} each, --memory-limit {limit})")
            return torch.cat([self._whole(x[i : i + k]) for i in range(0, n, k)])
        return self._tiles(
            x, f"{w}x{h}: tiled (a whole pass needs ~{format_bytes(per)} > --memory-limit {limit})"
        )

    def _tiles(self, x: torch.Tensor, why: str) -> torch.Tensor:
        h, w = x.shape[2:]
        if self.program is None:
            limit = format_bytes(self.memory_limit)
            raise UserError(
                f"a {w}x{h} image does not fit --memory-limit {limit} in one pass, and {self.runner.name} "
                "files hold no layer program to tile; translate from the run folder or an .onnx export, "
                "or raise --memory-limit"
            )
        tiled = self._tiler()  # CPU in and out (each image tiled on its own): activations live on the host
        out = run_padded(tiled, x.cpu(), self.runner.size_multiple)
        self._once(f"{why}; {tiled.note}")
        return out.to(x.device)

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        y = run_padded(self.runner, x.to(self.runner.device, non_blocking=True), self.runner.size_multiple)
        return y.float().to(x.device)

    def _whole_bytes(self, n: int, h: int, w: int) -> int:
        """whole_image_bytes, kept for the last SHAPES_KEPT shapes: walking the program costs ~0.2 ms, and
        a folder's batches repeat a few shapes thousands of times (at batch 32 on a GPU, a batch takes a
        few ms); bounded because a server sees as many shapes as its clients send."""
        key = (n, h, w)
        if key in self._bytes:
            self._bytes.move_to_end(key)
            return self._bytes[key]
        from fastcycle.tiling import whole_image_bytes

        self._bytes[key] = whole_image_bytes(self.program, n, h, w, self._dtype())
        if len(self._bytes) > SHAPES_KEPT:
            self._bytes.popitem(last=False)
        return self._bytes[key]

    def _dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.runner.precision, torch.float32)

    def _tiler(self) -> Any:
        if self._tiled is None:
            from fastcycle.tiling import TiledGenerator

            o = self.options
            reduced = self.runner.precision in _REDUCED
            self._tiled = TiledGenerator(
                self.program,
                device=self.runner.device,
                amp_dtype=self._dtype() if reduced else None,
                tile=o.tile,
                overlap=o.tile_overlap,
                memory_limit=self.memory_limit,
                scratch_dir=o.scratch_dir,
                segments=self.segments,
            )
        return self._tiled

    def _once(self, line: str, key: str | None = None) -> None:
        """Say `line` the first time its key (default: the line itself) comes up."""
        key = line if key is None else key
        if key not in self._said:
            self._said.add(key)
            self.say(line)
