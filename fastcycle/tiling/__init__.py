"""Tiled generator inference with whole-image instance-norm statistics, in bounded memory.

program_from_module lowers a generator into a layer program; TiledGenerator runs it over an image of
any size, tile by tile, giving the whole-image result (method: fastcycle.tiling.execute's docstring and
docs/translation-and-export.md, "Large images: tiled inference"); whole_image_bytes and tile_for_limit
size the work to a memory limit.
"""

from fastcycle.tiling.execute import TiledGenerator
from fastcycle.tiling.memory import tile_for_limit, tiled_bytes, whole_image_bytes
from fastcycle.tiling.program import Op, Program, Segment, program_from_module, segments
from fastcycle.tiling.segments import SegmentBackend, TorchSegments

__all__ = [
    "Op",
    "Program",
    "Segment",
    "SegmentBackend",
    "TiledGenerator",
    "TorchSegments",
    "program_from_module",
    "segments",
    "tile_for_limit",
    "tiled_bytes",
    "whole_image_bytes",
]
