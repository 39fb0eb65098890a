"""`--loader gpu-cache`: decode every image once into device memory; a training batch is one gather.

horse2zebra is ~2,400 images: at --load-size 286 that is 0.6 GB of uint8, a rounding error next to an
H100's 80 GB, and it removes decoding, resizing and host-to-device copies from the step altogether.
The resized images are PIL's bicubic output, the same pixels the torch loader produces, and the crops
and flips come from the same epoch plan: both loaders give identical batches for a seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from fastcycle.data.contract import Batch, LoaderSpec
from fastcycle.data.folders import load_image
from fastcycle.data.plan import epoch_plan, rank_positions
from fastcycle.data.scan import DomainScan
from fastcycle.data.transforms import crop_offset, prepare, to_model_range
from fastcycle.errors import UserError


def cache_bytes(spec: LoaderSpec) -> int:
    """Bytes the cache needs: uint8 at each image's prepared size and its domain's channels, both domains."""
    ncs = (spec.nc_A, spec.nc_B)[: len(spec.scans)]
    pixels = [int(spec.prepared_sizes(s).prod(axis=1).sum()) for s in spec.scans]
    return sum(p * nc for p, nc in zip(pixels, ncs, strict=True))


class _Domain:
    """One domain's images on the device: one (N, H, W, nc) tensor when all share a size (one gather
    per batch), else a list of (H, W, nc) tensors (a slice per sample)."""

    def __init__(self, spec: LoaderSpec, scan: DomainScan, threads: int, nc: int):
        self.sizes = spec.prepared_sizes(scan)  # (n, 2) width, height

        def decode(f):
            img = prepare(load_image(f.path, nc), spec.policy, spec.load_size, spec.crop_size)
            return np.array(img).reshape(img.height, img.width, nc)  # mode L: (H, W) -> (H, W, 1)

        with ThreadPoolExecutor(threads) as pool:  # PIL decodes and resizes without the GIL
            arrays = list(pool.map(decode, scan.images))
        self.uniform = len({tuple(s) for s in self.sizes.tolist()}) == 1
        if self.uniform:
            self.images = torch.from_numpy(np.stack(arrays)).to(spec.device)  # (N, H, W, nc) uint8
        else:
            self.images = [torch.from_numpy(a).to(spec.device) for a in arrays]


class GpuCacheLoader:
    name = "gpu-cache"

    def __init__(self, spec: LoaderSpec, budget_bytes: int, num_workers: int):
        need = cache_bytes(spec)
        if need > budget_bytes:
            n = len(spec.A.images) + len(spec.B.images)
            raise UserError(
                f"--loader gpu-cache needs {need / 2**30:.2f} GiB for {n:,} "
                f"images at their --load-size, over the {budget_bytes / 2**30:.2f} GiB budget; raise "
                "--cache-budget-gb, lower --load-size or --max-dataset-size, or use --loader dali"
            )
        self.spec = spec
        threads = max(1, min(num_workers, os.cpu_count() or 1))
        self.domains = (_Domain(spec, spec.A, threads, spec.nc_A), _Domain(spec, spec.B, threads, spec.nc_B))

    def _take(self, dom: _Domain, idx: np.ndarray, u: np.ndarray, on_device: dict | None) -> torch.Tensor:
        """(B, nc, h, w) uint8 channels-last view: crop at the plan's offsets, mirror where u[2] < 0.5."""
        c, flip = self.spec.crop, self.spec.flip
        if on_device is not None:  # one gather for the whole batch, indices already on the device
            i, y, x = on_device["i"], on_device["y"], on_device["x"]
            out = dom.images[i[:, None, None], y[:, :, None], x[:, None, :]]  # (B, c, c, nc)
            return out.permute(0, 3, 1, 2)
        crops = []
        for k, j in enumerate(idx.tolist()):
            img = dom.images[j]
            if c is not None:
                h, w = img.shape[:2]
                x0, y0 = int(crop_offset(u[k, 0], w, c)), int(crop_offset(u[k, 1], h, c))
                img = img[y0 : y0 + c, x0 : x0 + c]
            if flip and u[k, 2] < 0.5:
                img = img.flip(1)
            crops.append(img)
        return torch.stack(crops).permute(0, 3, 1, 2)

    def _gather_indices(self, dom: _Domain, idx: np.ndarray, u: np.ndarray) -> dict:
        """Per-sample row and column indices of the crop (columns reversed when mirrored), (S, B, c)."""
        c = self.spec.crop
        w, h = dom.sizes[0]
        x0, y0 = crop_offset(u[..., 0], w, c), crop_offset(u[..., 1], h, c)  # (S, B)
        ramp = np.arange(c)
        cols = np.where(
            (self.spec.flip & (u[..., 2] < 0.5))[..., None],
            x0[..., None] + c - 1 - ramp,
            x0[..., None] + ramp,
        )
        arrays = {"i": idx, "y": y0[..., None] + ramp, "x": cols}
        # One upload per epoch: a per-step copy from pageable memory would make the host wait for the GPU.
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.spec.device) for k, v in arrays.items()}

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        s = self.spec
        plan = epoch_plan(s.seed, epoch, len(s.A.images), len(s.B.images), not s.serial_batches)
        pos = rank_positions(s.pairs, s.batch_size, s.rank, s.world_size, start_step)  # (S, B)
        parts = [
            (self.domains[0], plan.a[pos], plan.u[pos][..., :3]),
            (self.domains[1], plan.b[pos], plan.u[pos][..., 3:]),
        ]
        fast = [self._gather_indices(d, i, u) if d.uniform and s.crop else None for d, i, u in parts]
        # Which file each image is, uploaded once per epoch like the gather indices.
        index_A, index_B = (torch.from_numpy(np.ascontiguousarray(i)).to(s.device) for _, i, _ in parts)
        for step in range(len(pos)):
            A, B = (
                self._take(d, i[step], u[step], None if f is None else {k: v[step] for k, v in f.items()})
                for (d, i, u), f in zip(parts, fast, strict=True)
            )
            yield Batch(self._finish(A), self._finish(B), index_A=index_A[step], index_B=index_B[step])

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(
            memory_format=torch.channels_last if self.spec.channels_last else torch.contiguous_format
        )
        return to_model_range(x)

    def state_dict(self) -> dict:
        return {}
