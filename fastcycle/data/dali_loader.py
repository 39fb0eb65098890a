"""`--loader dali`: one NVIDIA DALI pipeline decodes, resizes, crops, flips and normalises on the GPU.

Two file readers (A and B) with their own seeds shuffle their domain afresh each pass
(`shuffle_after_epoch`, a true permutation, not a shuffle buffer); the epoch is the larger domain's
length and the smaller reader simply wraps into its next pass. Readers shard natively for DDP: every
rank uses the same reader seeds, so the shards of one pass are disjoint. JPEGs decode on the GPU
(`device="mixed"`: nvJPEG, on the hardware JPEG decoder where the GPU has one), and the float result is
copied device-to-device into a torch tensor: no host round trip. Without CUDA the same graph runs with
CPU operators and `device_id=None`, which is how CI tests it.

Resizes use the sizes fastcycle.data.transforms computes on the host (looked up per file by the
reader's label, which is the file's index), so the output sizes match the other loaders exactly; the
pixels differ slightly (DALI's and PIL's bicubic filters round differently). Files the scan marked
for conversion (CMYK, 16-bit, palette, alpha, non-JPEG/PNG) are converted once by PIL into a PNG under
the run folder, so DALI only ever sees 8-bit RGB or grayscale JPEG and PNG.

Exact resume: DALI's own checkpointing (reader positions and random state) is saved with the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from fastcycle.data.contract import Batch, LoaderSpec
from fastcycle.data.folders import load_image, write_image
from fastcycle.data.scan import DomainScan
from fastcycle.data.transforms import resize_size
from fastcycle.errors import UserError

try:
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def
except ImportError:  # the message below is raised only when --loader dali is asked for
    fn = None


def _converted_file(f, cache: Path, nc: int) -> Path:
    """An 8-bit PNG of `f` decoded to `nc` channels, named by path, size, mtime (so edits are noticed)
    and nc."""
    st = f.path.stat()
    key = hashlib.sha1(f"{f.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{nc}".encode()).hexdigest()[:20]
    out = cache / f"{key}.png"
    if not out.exists():
        img = np.asarray(load_image(f.path, nc)).reshape(f.size[1], f.size[0], nc)
        write_image(img, out)  # atomic: a crash never leaves half a PNG
    return out


# What the saved reader positions depend on: resuming them under another value reads other batches.
FINGERPRINT = ("pairs", "policy", "seed", "batch_size", "rank", "world_size")


def _seed(*key: int) -> int:
    return int(np.random.default_rng(key).integers(2**31))


class DaliLoader:
    name = "dali"

    def __init__(
        self,
        spec: LoaderSpec,
        work_dir: Path,
        num_threads: int,
        prefetch: int,
        state: dict | None = None,
        say: Callable[[str], object] = print,
    ):
        """state: a resumed run's state_dict(), whose reader positions the pipeline continues from when
        they belong to this data and shard; say: where the line goes when they do not."""
        if fn is None:
            raise UserError(
                "--loader dali needs NVIDIA DALI: pip install 'fastcycle[dali]' "
                "(nvidia-dali-cuda130), or use --loader torch"
            )
        self.spec = spec
        self.fingerprint = [getattr(spec, k) for k in FINGERPRINT]
        cache = work_dir / "dali_converted"
        files = [
            [str(_converted_file(f, cache, nc) if f.convert else f.path) for f in s.images]
            for s, nc in ((spec.A, spec.nc_A), (spec.B, spec.nc_B))
        ]
        gpu = spec.device.type == "cuda"
        checkpoint = None
        if state and state.get("fingerprint") == self.fingerprint:
            checkpoint = state["dali"]
        elif state is not None:  # a resume whose reader positions cannot be used: say so
            saved = dict(zip(FINGERPRINT, state.get("fingerprint") or [], strict=False))
            changed = [
                f"{k} {saved[k]} -> {v}"
                for k, v in zip(FINGERPRINT, self.fingerprint, strict=True)
                if k in saved and saved[k] != v
            ]
            why = ", ".join(changed) if "dali" in state else "it was written with another --loader"
            say(
                f"data: the checkpoint holds no DALI reader positions for this data and shard ({why}); "
                "the readers start their passes afresh, so this resume does not see the batches an "
                "uninterrupted run would"
            )
        self.pipe = self._pipeline(files, gpu)(
            batch_size=spec.batch_size,
            num_threads=max(1, num_threads),
            device_id=(spec.device.index if spec.device.index is not None else torch.cuda.current_device())
            if gpu
            else None,
            seed=_seed(spec.seed, spec.rank, 7),  # augmentation: its own stream per rank
            prefetch_queue_depth=prefetch,
            enable_checkpointing=True,
            checkpoint=checkpoint,
        )
        self.pipe.build()

    def _domain(self, scan: DomainScan, files: list[str], reader_seed: int, gpu: bool, nc: int):
        """One domain's graph: read -> decode (to `nc` channels) -> resize -> crop -> flip + normalise."""
        s = self.spec
        n = len(files)
        encoded, index = fn.readers.file(
            files=files,
            labels=list(range(n)),  # the label is the file's index: it keys the size lookups below
            shuffle_after_epoch=not s.serial_batches,
            seed=reader_seed,  # the same on every rank: the shards of a pass are disjoint
            shard_id=s.rank,
            num_shards=s.world_size,
            name=scan.name,
        )
        # adjust_orientation=False: the reference (PIL) ignores EXIF rotation, and so does every loader.
        # GRAY: the decoder's own luminance of RGB files (or a grayscale file as stored), one channel.
        img = fn.decoders.image(
            encoded,
            device="mixed" if gpu else "cpu",
            output_type=types.GRAY if nc == 1 else types.RGB,
            adjust_orientation=False,
        )

        def per_file(values: np.ndarray):
            """A constant when every file shares the value, else a lookup by file index."""
            if (values == values[0]).all():
                return float(values[0])
            table = [float(v) for v in values]
            return fn.lookup_table(index, keys=list(range(n)), values=table, dtype=types.FLOAT)

        sizes = np.array([f.size for f in scan.images]).reshape(-1, 2)  # (n, 2) as stored
        resized = np.array([resize_size(s.policy, w, h, s.load_size, s.crop_size) for w, h in sizes])
        prepared = s.prepared_sizes(scan)
        for target, before in ((resized, sizes), (prepared, resized)):
            if (target != before).any():  # skip a resize that would leave every image as it is
                w, h = per_file(target[:, 0]), per_file(target[:, 1])
                img = fn.resize(img, resize_x=w, resize_y=h, interp_type=types.INTERP_CUBIC, antialias=True)
        if s.crop is not None:
            c = s.crop
            w, h = per_file(prepared[:, 0]), per_file(prepared[:, 1])
            # The same uniform offset over [0, extent - crop] as crop_offset, clamped against float
            # rounding at the top of the range.
            x0 = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (w - c + 1)), w - c)
            y0 = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (h - c + 1)), h - c)
            img = fn.slice(
                img,
                fn.stack(x0, y0),
                np.array([c, c], dtype=np.float32),
                axis_names="WH",
                normalized_anchor=False,
                normalized_shape=False,
            )
        mirror = fn.random.coin_flip(probability=0.5) if s.flip else 0
        image = fn.crop_mirror_normalize(
            img,
            mirror=mirror,
            mean=[127.5] * nc,  # uint8 [0, 255] -> float [-1, 1], the generators' range
            std=[127.5] * nc,
            dtype=types.FLOAT,
            # HWC is NHWC in torch's channels-last: the batch needs no transpose before the convs.
            output_layout="HWC" if s.channels_last else "CHW",
        )
        return image, index

    def _pipeline(self, files: list[list[str]], gpu: bool):
        s = self.spec

        @pipeline_def
        def cyclegan_pipeline():
            return tuple(
                out
                for k, (scan, f, nc) in enumerate(zip((s.A, s.B), files, (s.nc_A, s.nc_B), strict=True))
                for out in self._domain(scan, f, _seed(s.seed, k), gpu, nc)
            )

        return cyclegan_pipeline

    def _to_torch(self, tensor_list) -> torch.Tensor:
        dense = tensor_list.as_tensor()  # (N, H, W, nc) or (N, nc, H, W); one size per batch (check_spec)
        if self.spec.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            out = torch.empty(dense.shape(), dtype=torch.float32, device=self.spec.device)
            # Device-to-device copy on torch's current stream, ordered after DALI's work.
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.spec.device))
        else:
            out = torch.from_numpy(np.array(dense))
        return out.permute(0, 3, 1, 2) if self.spec.channels_last else out

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        # The readers are streams: a resumed pipeline (from state_dict) is already at start_step.
        for _ in range(start_step, self.spec.steps_per_epoch):
            A, index_A, B, index_B = self.pipe.run()
            yield Batch(self._to_torch(A), self._to_torch(B), [], self._index(index_A), self._index(index_B))

    @staticmethod
    def _index(labels) -> torch.Tensor:
        """The reader's labels (file indices, on the host) -> (N,) int64."""
        return torch.from_numpy(np.array(labels.as_tensor()).reshape(-1).astype(np.int64))

    def state_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "dali": self.pipe.checkpoint()}
