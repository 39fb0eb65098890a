"""Full-size activations between segments, in memory-mapped files of a scratch folder, not in RAM.

A 12000 x 8000 image has 96 M pixels: one 64-channel fp32 activation of it is 24.6 GB. Each buffer is a
sparse file mapped into the process; a tile's region is copied in or out with numpy slicing, and then
the whole mapping is dropped from the process (madvise MADV_DONTNEED), so the mapped pages do not pile
up in its resident set: on a shared file mapping this only unmaps them, the written data stays in the
page cache (reclaimable memory the kernel writes back) and in the file.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import torch

from fastcycle.tiling.geometry import Region

# numpy has no bfloat16: such buffers are stored as their 16-bit patterns and viewed back.
_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}
_BITS = {torch.bfloat16: torch.int16}


class ScratchBuffer:
    """One (C, H, W) activation in `folder`, of `dtype` (float32, float16 or bfloat16)."""

    def __init__(self, folder: str | Path, name: str, shape: tuple[int, int, int], dtype: torch.dtype):
        self.path = Path(folder) / f"{name}.bin"
        self.shape, self.dtype = shape, dtype
        np_dtype = np.dtype(_NUMPY[dtype])
        nbytes = int(np.prod(shape)) * np_dtype.itemsize
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, nbytes)  # sparse: disk blocks only for what is written
            self._map = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        self._array = np.frombuffer(self._map, dtype=np_dtype).reshape(shape)

    def _drop_pages(self) -> None:
        self._map.madvise(mmap.MADV_DONTNEED)

    def read(self, region: Region) -> torch.Tensor:
        """A copy of the region, (1, C, h, w), on the CPU."""
        y0, y1, x0, x1 = region
        t = torch.from_numpy(np.array(self._array[:, y0:y1, x0:x1]))
        self._drop_pages()
        return (t.view(self.dtype) if self.dtype in _BITS else t).unsqueeze(0)

    def write(self, region: Region, t: torch.Tensor) -> None:
        """t: (1, C, h, w) on any device, any float dtype (converted to the buffer's)."""
        y0, y1, x0, x1 = region
        t = t[0].to("cpu", self.dtype)
        if self.dtype in _BITS:
            t = t.view(_BITS[self.dtype])
        self._array[:, y0:y1, x0:x1] = t.numpy()
        self._drop_pages()

    def close(self) -> None:
        """Unmap and delete the file."""
        del self._array  # the mapping cannot close while a numpy view exports its buffer
        self._map.close()
        self.path.unlink(missing_ok=True)
