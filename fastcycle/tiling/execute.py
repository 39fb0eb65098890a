"""The tiled executor: a generator's program over an image of any size, in tiles, with the whole image's
instance-norm statistics, so that the result is the whole-image forward's.

Method. The eval-mode generator is lowered into a layer program (fastcycle.tiling.program) and cut into
segments at its instance norms. Segment by segment, over a grid of output tiles: each tile's input
region is worked out op by op at that op's resolution (fastcycle.tiling.geometry: the halo of every
conv, stride and transposed conv; reflect and zero padding only at the true image border, so interior
tiles read their real neighbours), the segment's ops run on it (a SegmentBackend: torch ops here, ONNX
Runtime in fastcycle.export.tiled_ort), the tile's interior of each output is written to a scratch
buffer, and for every output a later instance norm reads, the tile's per-channel mean and biased
variance (fp32) are merged into the whole image's in float64 (Chan et al.'s pairwise update, which does
not cancel as sum-of-squares does). The next segment applies the normalisation with the layer's eps (and
the ReLU after it) as it reads its tiles. Only the summation order differs from the whole-image forward.

Memory: activations between segments live in memory-mapped files (fastcycle.tiling.scratch) in a fresh
temporary folder, removed afterwards also on error; what stays in memory is the weights, the output
image and one tile's working set (fastcycle.tiling.memory estimates it and picks the tile for a limit).
"""

from __future__ import annotations

import ctypes
import errno
import math
import tempfile
from pathlib import Path

import torch

from fastcycle.errors import UserError
from fastcycle.tiling.geometry import grid, halo, plan_tile, sizes
from fastcycle.tiling.memory import format_bytes, tile_for_limit
from fastcycle.tiling.program import Program, channels
from fastcycle.tiling.program import segments as split_segments
from fastcycle.tiling.scratch import ScratchBuffer
from fastcycle.tiling.segments import Norms, SegmentBackend, TorchSegments, crop

DEFAULT_TILE = 512  # output pixels per tile side without --tile or --memory-limit (rounded to the multiple)


class _Stats:
    """Per-channel mean and biased variance of one buffer over all tiles, merged in float64."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, t: torch.Tensor) -> None:  # (1, C, h, w), any float dtype, any device
        c, k = t.shape[1], t.shape[2] * t.shape[3]
        v = t[0].permute(1, 2, 0).float().contiguous().view(k, c)  # channels-last tiles: no copy
        # Sums over the rows of a (k / g, g C) view: torch reduces over a wide matrix's rows 10x faster
        # than over a (k, C) one's (measured 2.2 vs 24 ms at 480x480x16). Two passes (the mean, then the
        # centred squares): no cancellation, unlike a sum of squares.
        g = math.gcd(k, 64)
        mean = v.view(-1, g * c).sum(0).view(g, c).sum(0) / k
        var = (v - mean).square_().view(-1, g * c).sum(0).view(g, c).sum(0) / k
        mean, var = mean.double().cpu(), var.double().cpu()
        total = self.n + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + var * k + delta**2 * (self.n * k / total)
        self.n = total

    def affine(self, eps: float, gamma: torch.Tensor | None, beta: torch.Tensor | None):
        scale = (self.m2 / self.n + eps).rsqrt()
        if gamma is not None:
            scale = scale * gamma.double()
        shift = -self.mean * scale + (beta.double() if beta is not None else 0.0)
        return scale.float().view(1, -1, 1, 1), shift.float().view(1, -1, 1, 1)


class TiledGenerator:
    """A generator's program as a callable on images of any size (multiples of its size multiple)."""

    def __init__(
        self,
        program: Program,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        memory_limit: int | None = None,
        scratch_dir: str | None = None,
        segments: SegmentBackend | None = None,
    ):
        self.program, self.segs = program, split_segments(program)
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.memory_limit, self.scratch_dir = memory_limit, scratch_dir
        if scratch_dir is not None and not Path(scratch_dir).is_dir():
            raise UserError(f"scratch folder {scratch_dir} is not a folder; create it or leave it out")
        m = program.size_multiple
        if tile is not None and (tile <= 0 or tile % m):
            raise UserError(f"--tile {tile} must be a positive multiple of {m} for this generator")
        self.tile = tile
        self.halo = halo(program, self.segs)
        if overlap is not None and overlap < self.halo:
            raise UserError(
                f"--tile-overlap {overlap} is below this generator's exact halo of {self.halo} px; "
                f"give at least {self.halo}, or leave it out for exactly that"
            )
        self.extra = 0 if overlap is None else overlap - self.halo
        self.backend = segments or TorchSegments()
        self.backend.bind(program, self.segs, self.device, amp_dtype)
        # Storage of the activations between segments: what the tiles compute in.
        self.store_dtype = amp_dtype if amp_dtype in (torch.float16, torch.bfloat16) else torch.float32
        self.note = self._note(tile, None, scratch_dir or tempfile.gettempdir())

    def _note(self, tile: int | None, tiles: int | None, where: str) -> str:
        side = f"{tile} px" if tile else f"{DEFAULT_TILE} px"
        if tile is None and self.memory_limit is not None:
            side = f"the largest within --memory-limit {format_bytes(self.memory_limit)}"
        count = f", {tiles} tiles" if tiles is not None else ""
        return (
            f"tiled on {self.backend.name} ({self.device}): tiles of {side}{count}, halo {self.halo} px, "
            f"{len(self.segs)} segments (whole-image instance-norm statistics), scratch files in {where}"
        )

    def tile_side(self, h: int, w: int) -> int:
        """The tile side for an h x w image: --tile, else the largest that fits --memory-limit."""
        m = self.program.size_multiple
        if self.tile is not None:
            return self.tile
        if self.memory_limit is None:
            return min(-(-DEFAULT_TILE // m) * m, -(-max(h, w) // m) * m)
        dtype = self.store_dtype
        side = tile_for_limit(self.program, h, w, self.memory_limit, dtype)
        if side is None:
            raise UserError(
                f"a {h}x{w} image does not fit in --memory-limit {format_bytes(self.memory_limit)} even in "
                f"tiles of {m} px; raise --memory-limit or use a machine with more memory"
            )
        return side

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) float32 on the CPU in [-1, 1], H and W multiples of the size multiple (the
        caller pads) -> (N, C_out, H, W) float32 on the CPU."""
        n, c, h, w = x.shape
        m = self.program.size_multiple
        if h % m or w % m or c != self.program.in_channels:
            raise ValueError(
                f"expected (N, {self.program.in_channels}, H, W) with H, W multiples of {m}, "
                f"got {tuple(x.shape)}"
            )
        side = self.tile_side(h, w)
        with tempfile.TemporaryDirectory(prefix="fastcycle-tiles-", dir=self.scratch_dir) as folder:
            self.note = self._note(side, len(grid(h, w, side)), folder)
            try:
                outs = [self._run(x[i : i + 1].float().cpu(), side, folder) for i in range(n)]
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                raise UserError(
                    f"the scratch folder {Path(folder).parent} ran out of space for a {h}x{w} image's "
                    "activations; free space there or point the scratch folder elsewhere"
                ) from e
            return outs[0] if n == 1 else torch.cat(outs)  # one image: no copy of the result

    def _run(
        self, x: torch.Tensor, side: int, folder: str
    ) -> torch.Tensor:  # (1, C, H, W) -> (1, C_out, H, W)
        program, segs = self.program, self.segs
        h, w = x.shape[2:]
        hw, ch = sizes(program, h, w), channels(program)
        out = torch.empty(1, ch[program.output], *hw[program.output])
        buffers: dict[str, ScratchBuffer | torch.Tensor] = {program.input: x, program.output: out}
        stats: dict[str, _Stats] = {}
        last_read = {name: i for i, seg in enumerate(segs) for name in seg.inputs}
        tiles = grid(h, w, side)
        try:
            for i, seg in enumerate(segs):
                for o in seg.outputs:
                    if o not in buffers:
                        buffers[o] = ScratchBuffer(folder, o, (ch[o], *hw[o]), self.store_dtype)
                norms: Norms = {}
                for op in seg.ops:
                    if op.kind == "inorm":
                        norm = stats[op.inputs[0]].affine(op.eps, op.scale, op.bias)
                        norms[op.output] = tuple(t.to(self.backend.device) for t in norm)
                for o in seg.stats:
                    stats[o] = _Stats()
                for tile in tiles:
                    plan = plan_tile(seg, hw, (h, w), tile, self.extra)
                    inputs = {name: _read(buffers[name], plan.need[name]) for name in seg.inputs}
                    outputs = self.backend.run(i, inputs, plan, norms)
                    for o in seg.outputs:
                        r, (y0, y1, x0, x1) = plan.need[o], plan.interior[o]
                        part = crop(outputs[o], (y0 - r[0], y1 - r[0], x0 - r[2], x1 - r[2]))
                        if o in seg.stats:
                            stats[o].add(part)
                        _write(buffers[o], plan.interior[o], part)
                    del inputs, outputs, part
                _trim()
                for name, j in last_read.items():  # free disk as soon as the last reader is done
                    if j == i and isinstance(buffers.get(name), ScratchBuffer):
                        buffers.pop(name).close()
        finally:
            for b in buffers.values():
                if isinstance(b, ScratchBuffer):
                    b.close()
        return out


def _load_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator keeps its own counsel
        return lambda pad: 0


_malloc_trim = _load_trim()


def _trim() -> None:
    """Hand the heap's free memory back to the system after each segment. Tile tensors (a few to tens
    of MB) sit below glibc's adaptive mmap threshold, so they live on the heap; within a segment every
    tile allocates the same shapes and reuses the same holes, but the next segment's shapes differ, and
    without a trim the holes piled up: 216 MiB peak instead of 114 at 2048 px, tiles of 480. (Trimmed
    after every tile instead, each tile paid its page faults again: 2.4x the whole image's time.)"""
    _malloc_trim(0)


def _read(buffer: ScratchBuffer | torch.Tensor, region) -> torch.Tensor:
    if isinstance(buffer, ScratchBuffer):
        return buffer.read(region)
    return crop(buffer, region)


def _write(buffer: ScratchBuffer | torch.Tensor, region, part: torch.Tensor) -> None:
    if isinstance(buffer, ScratchBuffer):
        buffer.write(region, part)
    else:
        crop(buffer, region).copy_(part)
