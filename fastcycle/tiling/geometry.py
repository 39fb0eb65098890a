"""Where each tile reads: buffer sizes, the input region every op needs, and each op's crops and pads.

Regions are (y0, y1, x0, x1), half-open, in a buffer's own pixel coordinates (a buffer at a quarter of
the image's resolution counts its own pixels). An output tile is a rectangle of the full-resolution
image; a segment output at another resolution takes the same rectangle scaled (tile sides are multiples
of the size multiple, so the scaling is exact).

For an op's output rows [a, b) the input rows it needs, with an input of n rows:
  conv   [a s - p0, (b - 1) s - p0 + k), clamped to [0, n); the part outside is the conv's zero padding
  convT  [ceil((a + p0 - k + 1) / s), floor((b - 1 + p0) / s) + 1), clamped: inputs outside do not exist
  pad    [a - p0, b - p0) clamped, and when the tile touches the image's border, the rows the
         reflection copies ([0, p0 - a] at the top): padding is applied only at the true border
and the same for columns. Interior tiles therefore read real neighbours, border tiles pad as the
whole-image network does, and every tile's output equals the whole image's on that rectangle.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastcycle.tiling.program import Op, Program, Segment

Region = tuple[int, int, int, int]  # y0, y1, x0, x1


def sizes(program: Program, h: int, w: int) -> dict[str, tuple[int, int]]:
    """Each buffer's (H, W) for an h x w input."""
    hw = {program.input: (h, w)}
    for op in program.ops:
        n = hw[op.inputs[0]]
        hw[op.output] = tuple(_out_size(op, n[axis], axis) for axis in (0, 1))
    return hw


def _out_size(op: Op, n: int, axis: int) -> int:
    k, s, p0, p1 = op.kernel[axis], op.stride[axis], op.pads[2 * axis], op.pads[2 * axis + 1]
    if op.kind == "pad":
        return n + p0 + p1
    if op.kind == "conv":
        return (n + p0 + p1 - k) // s + 1
    if op.kind == "convT":
        return (n - 1) * s - p0 - p1 + k + op.output_padding[axis]
    return n


def _need(op: Op, a: int, b: int, n: int, axis: int) -> tuple[int, int]:
    """The input interval (clamped to [0, n)) that output interval [a, b) of `op` reads along `axis`."""
    k, s, p0 = op.kernel[axis], op.stride[axis], op.pads[2 * axis]
    if op.kind == "pad":
        lo, hi = max(0, a - p0), min(n, b - p0)
        if a < p0:  # rows above the border: reflections of rows 1 .. p0 - a (F.pad reads row 0 too)
            lo, hi = 0, max(hi, p0 - a + 1)
        if b - p0 > n:  # below it: rows n - 1 - (b - p0 - n) .. n - 1
            lo, hi = min(lo, 2 * n - (b - p0) - 1), n
        return lo, hi
    if op.kind == "conv":
        return max(0, a * s - p0), min(n, (b - 1) * s - p0 + k)
    if op.kind == "convT":
        return max(0, -(-(a + p0 - k + 1) // s)), min(n, (b - 1 + p0) // s + 1)
    return a, b


@dataclass
class Step:
    """How one op runs on one tile: slices of its inputs, pads, a slice of its raw result."""

    crops: list[Region]  # per input, relative to that input's tile tensor
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right: reflect (pad) or zero (conv)
    out: Region | None = None  # pad and convT: the slice of the padded / transposed result that is kept


@dataclass
class TilePlan:
    need: dict[str, Region]  # the region held of every buffer the segment touches on this tile
    steps: list[Step]  # one per op of the segment
    interior: dict[str, Region]  # each segment output's share of the tile: what is written and counted


def _axis_step(op: Op, a: int, b: int, n: int, r0: int, axis: int) -> tuple[int, int, int, int, int, int]:
    """(crop start, crop end, pad before, pad after, keep start, keep end) along one axis."""
    k, s, p0 = op.kernel[axis], op.stride[axis], op.pads[2 * axis]
    lo, hi = _need(op, a, b, n, axis)
    if op.kind == "pad":
        before, after = max(0, p0 - a), max(0, b - p0 - n)
        start = lo + p0 - before  # the padded crop's first row, in output coordinates
        return lo - r0, hi - r0, before, after, a - start, b - start
    if op.kind == "conv":
        return lo - r0, hi - r0, lo - (a * s - p0), (b - 1) * s - p0 + k - hi, 0, 0
    if op.kind == "convT":
        start = lo * s - p0  # the unpadded transposed conv's first output row
        return lo - r0, hi - r0, 0, 0, a - start, b - start
    return a - r0, b - r0, 0, 0, 0, 0


def scale_region(tile: Region, hw: tuple[int, int], full: tuple[int, int]) -> Region:
    """A full-resolution rectangle in a buffer of size hw."""
    (y0, y1, x0, x1), (h, w), (fh, fw) = tile, hw, full
    for v, n, f in ((y0, h, fh), (y1, h, fh), (x0, w, fw), (x1, w, fw)):
        if v * n % f:
            raise ValueError(
                f"tile edge {v} does not fall on a pixel of a {n}-pixel buffer of a {f}-pixel image"
            )
    return y0 * h // fh, y1 * h // fh, x0 * w // fw, x1 * w // fw


def _hull(a: Region | None, b: Region) -> Region:
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def plan_tile(
    seg: Segment, hw: dict[str, tuple[int, int]], full: tuple[int, int], tile: Region, extra: int = 0
) -> TilePlan:
    """The regions and steps of one segment on one full-resolution output tile; `extra` full-resolution
    pixels of context computed around the tile beyond what its outputs need (the --tile-overlap)."""
    interior = {o: scale_region(tile, hw[o], full) for o in seg.outputs}
    need: dict[str, Region] = {}
    for o, (y0, y1, x0, x1) in interior.items():
        ey, ex = extra * hw[o][0] // full[0], extra * hw[o][1] // full[1]
        need[o] = (max(0, y0 - ey), min(hw[o][0], y1 + ey), max(0, x0 - ex), min(hw[o][1], x1 + ex))
    for op in reversed(seg.ops):  # consumers come after producers: each output's need is final here
        if op.output not in need:
            continue
        a0, a1, b0, b1 = need[op.output]
        for name in op.inputs:
            (nh, nw) = hw[name]
            need[name] = _hull(need.get(name), (*_need(op, a0, a1, nh, 0), *_need(op, b0, b1, nw, 1)))
    steps = []
    for op in seg.ops:
        a0, a1, b0, b1 = need[op.output]
        crops, pads, out = [], (0, 0, 0, 0), None
        for name in op.inputs:
            (nh, nw), r = hw[name], need[name]
            ys = _axis_step(op, a0, a1, nh, r[0], 0)
            xs = _axis_step(op, b0, b1, nw, r[2], 1)
            crops.append((ys[0], ys[1], xs[0], xs[1]))
            pads, out = (ys[2], ys[3], xs[2], xs[3]), (ys[4], ys[5], xs[4], xs[5])
        steps.append(Step(crops, pads, out if op.kind in ("pad", "convT") else None))
    return TilePlan(need, steps, interior)


def grid(h: int, w: int, tile: int) -> list[Region]:
    """Output tiles of side `tile`, row by row; the last row and column take what is left."""
    return [(y, min(y + tile, h), x, min(x + tile, w)) for y in range(0, h, tile) for x in range(0, w, tile)]


def representative(h: int, w: int, tile: int) -> list[Region]:
    """The tiles that differ in shape or border contact: first, second, next-to-last and last of each
    axis (every other tile repeats the second's region shape)."""
    ys, xs = range(0, h, tile), range(0, w, tile)
    pick = lambda r: sorted({r[0], r[min(1, len(r) - 1)], r[max(0, len(r) - 2)], r[-1]})  # noqa: E731
    return [(y, min(y + tile, h), x, min(x + tile, w)) for y in pick(ys) for x in pick(xs)]


def halo(program: Program, segs: list[Segment]) -> int:
    """The exact context a tile reads around itself, in full-resolution pixels: the largest margin by
    which any segment's input region exceeds the tile, over the segments."""
    m = program.size_multiple
    side = 16 * m  # an interior tile far from every border
    hw = sizes(program, 5 * side, 5 * side)
    full = hw[program.input]
    tile = (2 * side, 3 * side, 2 * side, 3 * side)
    widest = 0
    for seg in segs:
        plan = plan_tile(seg, hw, full, tile)
        for name in seg.inputs:
            y0, _, _, _ = scale_region(tile, hw[name], full)
            margin = (y0 - plan.need[name][0]) * full[0] / hw[name][0]
            widest = max(widest, int(-(-margin // 1)))
    return widest
