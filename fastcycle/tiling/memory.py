"""How much memory a generator's forward takes, whole or in tiles, and the largest tile within a limit.

Both estimates walk the program and keep the buffers that are alive at each op, as the code that runs
it allocates them:
  whole image: torch eager on the modules (fastcycle.runner.TorchRunner): ReLU and LeakyReLU are in
    place; every other op writes a new tensor, an instance norm on a plane of 512x512 or more also a
    centred copy of its input (the CPU path; on a GPU this overestimates by one activation); a buffer
    dies after its last reader; plus
    the weights and the runner's copy of the input (the layout or device copy).
  tiles: the weights, the output image (the result, held in memory) and, over the segments and the
    tile shapes that differ (first, second, next-to-last and last of each axis), the largest working set
    of one tile: its input regions read from the scratch files, every op's result at its planned region
    (out of place, but a ReLU on a dead input in place), the conv's padded and channels-last copies
    of its input, and the copies made to write an output and count its statistics.
The scratch files are on disk, read and written by file I/O: they take no resident memory.
"""

from __future__ import annotations

import torch

from fastcycle.models.norms import CENTRE_FROM
from fastcycle.tiling.geometry import plan_tile, representative, sizes
from fastcycle.tiling.program import Program, channels, segments

# The allocator's share on top of a tile's live tensors: the tiles of a segment reuse glibc's heap
# holes (the executor trims the heap only between segments, which keeps the tiles fast), but the holes
# left by tiles of other shapes (border, partial) and by the ops' differing sizes stay resident until
# then. Measured peak over (estimate without it) on resnet_9blocks ngf 16 at 2048 px, glibc's allocator:
# 1.72, 1.53, 2.15, 1.71 for tiles of 256, 400, 528, 800 (tests/test_tiling.py keeps it honest).
SLACK = 2.2
# tile_for_limit keeps the estimate within this share of the limit: measured peaks came out up to 8%
# above the estimate (mobile_resnet_9blocks, unet_256 at 2048 px), and 15% (resnet_6blocks ngf 16 at
# 1024 px, tiles of 240 px: 55.9 MB against 48.5 MB, one run in three).
HEADROOM = 0.8
# What the tile loop holds beside its tensors: oneDNN's kernels, compiled per tile shape, and the loop's
# Python objects. Measured: 6.5 MiB above the tensors' estimate at tiles of 244 px, resnet_6blocks ngf 16.
FIXED = 8 * 2**20


def format_bytes(n: int | None) -> str:
    if n is None:
        return "none"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def weight_bytes(program: Program) -> int:
    tensors = [t for op in program.ops for t in (op.weight, op.bias, op.scale) if t is not None]
    return sum(t.numel() * 4 for t in tensors)


def whole_image_bytes(program: Program, n: int, h: int, w: int, dtype: torch.dtype) -> int:
    """Estimated peak memory of a plain whole-image forward (no autograd) of n images: weights, the
    runner's input copy and the largest set of simultaneously live activations."""
    item = torch.empty(0, dtype=dtype).element_size()
    hw, ch = sizes(program, h, w), channels(program)
    nbytes = lambda name: n * ch[name] * hw[name][0] * hw[name][1] * item  # noqa: E731
    storage = {program.input: program.input}
    last: dict[str, int] = {}
    for i, op in enumerate(program.ops):
        storage[op.output] = storage[op.inputs[0]] if op.kind in ("relu", "lrelu") else op.output
        for name in op.inputs:
            last[storage[name]] = i
    live: dict[str, int] = {}
    peak = 0
    for i, op in enumerate(program.ops):
        if storage[op.output] == op.output:
            live[op.output] = nbytes(op.output)
            # An instance norm on a large channels-last CPU plane centres a copy first
            # (fastcycle.models.norms: float32 sums would cancel): one more activation while it runs.
            large = hw[op.inputs[0]][0] * hw[op.inputs[0]][1] >= CENTRE_FROM
            centred = nbytes(op.inputs[0]) if op.kind == "inorm" and large else 0
            peak = max(peak, sum(live.values()) + centred)
        for s in [s for s in live if last.get(s, -1) <= i and s != storage[program.output]]:
            del live[s]
    return weight_bytes(program) + n * program.in_channels * h * w * 4 + peak


def tiled_bytes(program: Program, h: int, w: int, tile: int, dtype: torch.dtype) -> int:
    """Estimated peak memory of the tiled forward of one h x w image in tiles of side `tile`."""
    item = torch.empty(0, dtype=dtype).element_size()
    hw, ch = sizes(program, h, w), channels(program)
    full = (h, w)
    nbytes = lambda name, r: ch[name] * (r[1] - r[0]) * (r[3] - r[2]) * item  # noqa: E731
    out_image = ch[program.output] * h * w * 4
    worst = 0
    for seg in segments(program):
        last = {name: i for i, op in enumerate(seg.ops) for name in op.inputs}
        for t in representative(h, w, tile):
            plan = plan_tile(seg, hw, full, t)
            live = {name: nbytes(name, plan.need[name]) for name in seg.inputs}
            peak = sum(live.values())
            for i, op in enumerate(seg.ops):
                out = nbytes(op.output, plan.need[op.output])
                # a conv's input is copied (zero padding, channels-last) and a pad's result is a bit wider
                copies = op.kind in ("conv", "convT", "pad")
                temp = sum(live.get(name, 0) for name in op.inputs) if copies else 0
                new = 0 if op.kind in ("relu", "lrelu") else out  # in place on a dead input
                peak = max(peak, sum(live.values()) + new + temp)
                if new or op.output not in live:
                    live[op.output] = out
                for name in op.inputs:
                    if last[name] == i and name not in seg.outputs:
                        live.pop(name, None)
            # Writing each output: the statistics' fp32 centred copy, and a crop's contiguous copies
            # (for the statistics and for the file) when the output's region is wider than the tile.
            for o in seg.outputs:
                y0, y1, x0, x1 = plan.interior[o]
                inner, cropped = ch[o] * (y1 - y0) * (x1 - x0), plan.need[o] != plan.interior[o]
                temp = inner * 4 * (o in seg.stats) * (1 + cropped) + inner * item * cropped
                peak = max(peak, sum(live.values()) + temp)
            worst = max(worst, peak)
    return weight_bytes(program) + out_image + int(SLACK * worst) + FIXED


def tile_for_limit(program: Program, h: int, w: int, memory_limit: int, dtype: torch.dtype) -> int | None:
    """The largest tile side (a multiple of the program's size multiple) whose tiled working set fits in
    memory_limit bytes; None when even the smallest does not."""
    m = program.size_multiple
    lo, hi = 1, -(-max(h, w) // m)  # in multiples of m; the estimate grows with the tile
    memory_limit = int(memory_limit * HEADROOM)
    if tiled_bytes(program, h, w, m, dtype) > memory_limit:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tiled_bytes(program, h, w, mid * m, dtype) <= memory_limit:
            lo = mid
        else:
            hi = mid - 1
    return lo * m
