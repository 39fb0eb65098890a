"""Full-size activations between segments, in files of a scratch folder, not in RAM.

A 12000 x 8000 image has 96 M pixels: one 64-channel fp32 activation of it is 24.6 GB. Each buffer is a
sparse file in (H, W, C) order, read and written a tile at a time with positional file I/O (preadv,
pwritev), one call per tile row: nothing is mapped into the process, so the resident set holds only the
tile being copied (the data passes through the page cache, which the kernel reclaims and writes back).
(H, W, C) because a tile row is then one contiguous run of the file and the tensor it becomes is
channels-last, the layout the CPU convolutions want.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fastcycle.tiling.geometry import Region

# Positional reads and writes move at most this much per call on Linux (0x7ffff000): loop beyond it.
_MAX_IO = 0x7FFFF000


def _full(call, fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        n = call(fd, [view[done : done + _MAX_IO]], offset + done)
        if n <= 0:
            raise OSError(f"short scratch file I/O at offset {offset + done}")
        done += n


class ScratchBuffer:
    """One (C, H, W) activation in `folder`, stored (H, W, C) in `dtype` (float32, float16, bfloat16)."""

    def __init__(self, folder: str | Path, name: str, shape: tuple[int, int, int], dtype: torch.dtype):
        self.path = Path(folder) / f"{name}.bin"
        self.shape, self.dtype = shape, dtype
        c, h, w = shape
        self.item = torch.empty(0, dtype=dtype).element_size()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, c * h * w * self.item)  # sparse: disk blocks only for what is written

    def _rows(self, region: Region):
        """(offset, byte length) in the file of each row of the region; whole-width rows merge."""
        c, _, width = self.shape
        y0, y1, x0, x1 = region
        row = (x1 - x0) * c * self.item
        if x0 == 0 and x1 == width:
            return [(y0 * width * c * self.item, row * (y1 - y0))]
        return [(((y * width) + x0) * c * self.item, row) for y in range(y0, y1)]

    def read(self, region: Region) -> torch.Tensor:
        """A copy of the region, (1, C, h, w) channels-last, on the CPU."""
        y0, y1, x0, x1 = region
        t = torch.empty(y1 - y0, x1 - x0, self.shape[0], dtype=self.dtype)  # (h, w, C)
        view = memoryview(t.view(torch.uint8).numpy()).cast("B")
        at = 0
        for offset, n in self._rows(region):
            _full(os.preadv, self.fd, view[at : at + n], offset)
            at += n
        return t.permute(2, 0, 1).unsqueeze(0)

    def write(self, region: Region, t: torch.Tensor) -> None:
        """t: (1, C, h, w) on any device, any float dtype (converted to the buffer's)."""
        hwc = t[0].permute(1, 2, 0).to("cpu", self.dtype)
        if not hwc.is_contiguous():  # a crop of a channels-last tile is contiguous per row, not whole
            hwc = hwc.contiguous()
        view = memoryview(hwc.view(torch.uint8).numpy()).cast("B")
        at = 0
        for offset, n in self._rows(region):
            _full(os.pwritev, self.fd, view[at : at + n], offset)
            at += n

    def close(self) -> None:
        """Close and delete the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)
