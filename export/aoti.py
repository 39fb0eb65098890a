"""AOTInductor export of a generator to a self-contained .pt2 package, and the runner that loads it.

`export_aoti` traces the eval-mode generator with torch.export (batch dynamic in 1..max_batch; with
`dynamic_hw`, H and W dynamic as multiples of 4) and compiles it ahead of time with Inductor into a
shared library inside a .pt2 zip: no Python model code, no Triton compile and no warm-up at load time.
A package is compiled for one device type (the example's): a CPU package runs on CPU only, a CUDA one
on CUDA only.

AOTInductor trusts its inputs: it checks neither shapes nor strides at run time unless the environment
sets AOTI_RUNTIME_CHECK_INPUTS=1 (and in torch 2.14 those opt-in checks use a narrower batch range than
the exported one). A 48x40 batch fed to a 32x32 package returns a 32x32 result computed from the wrong
memory. So the export records its shape contract in the package metadata (`fastcycle.*` keys) and
`AotiRunner` enforces it with a one-line UserError before every call.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError
from fastcycle.runner import UNRECORDED_SIZE_MULTIPLE

MAX_HW = 4096  # largest H and W of a dynamic_hw package (pixels)
MIN_HW = 8  # smallest: the generator's residual blocks reflect-pad by 1 at H/4, which needs H/4 >= 2
_AOTI_DIR = "/data/aotinductor/"  # every AOTInductor package holds its compiled model under <name>/data/...


def export_aoti(
    net: nn.Module,
    path: str | Path,
    *,
    example: torch.Tensor,
    max_batch: int = 64,
    dynamic_hw: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Compile the eval-mode `net` ((N, C, H, W) -> (N, C, H, W)) into an AOTInductor package at `path`.

    The batch is dynamic in 1..max_batch; H and W are example's, or with `dynamic_hw` any multiples of
    4 in MIN_HW..MAX_HW. The package is compiled for example.device, where `net` must already be. Only
    example's shape, dtype and device matter, not its values or batch size. `metadata` (str -> str) is
    stored in the package as `fastcycle.<key>`. The file is written atomically; returns `path`.
    """
    path = Path(path)
    if example.dim() != 4:
        raise ValueError(f"example must be an (N, C, H, W) batch, got shape {tuple(example.shape)}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    _, c, h, w = example.shape
    if dynamic_hw and not (h % 4 == 0 and w % 4 == 0 and min(h, w) >= MIN_HW and max(h, w) <= MAX_HW):
        raise ValueError(f"with dynamic_hw, example H and W must be multiples of 4 in {MIN_HW}..{MAX_HW}")
    on = {p.device for p in net.parameters()} - {example.device}
    if on:
        raise ValueError(f"net has parameters on {sorted(map(str, on))}, example is on {example.device}")

    # A dynamic batch: translate's last batch is usually partial, and one package serves any
    # --batch-size. The upper bound is part of the compiled code, not just a check: Inductor picks
    # 32-bit indexing for GPU kernels when the largest allowed tensor fits in int32, so a batch past it
    # could overflow silently (AOTI does not check it at run time; AotiRunner does).
    # The example batch is 2, not the caller's: torch.export specialises a size-1 dimension to 1.
    n = 2 if max_batch >= 2 else 1
    example = example[:1].float().expand(n, c, h, w).contiguous()
    dims: dict[int, object] = {0: torch.export.Dim("batch", min=1, max=max_batch)} if n == 2 else {}
    if dynamic_hw:
        # H and W as 4 * Dim: the two stride-2 convs need multiples of 4, and a derived dimension lets
        # the exporter prove the down- and upsampled sizes match instead of failing on a guard.
        dims |= {
            2: 4 * torch.export.Dim("h4", min=MIN_HW // 4, max=MAX_HW // 4),
            3: 4 * torch.export.Dim("w4", min=MIN_HW // 4, max=MAX_HW // 4),
        }
    info = {
        "max_batch": max_batch,
        "channels": c,
        "height": 0 if dynamic_hw else h,  # 0: any multiple of 4 in min_hw..max_hw
        "width": 0 if dynamic_hw else w,
        "min_hw": MIN_HW,
        "max_hw": MAX_HW,
    } | dict(metadata or {})
    configs = {"aot_inductor.metadata": {f"fastcycle.{k}": str(v) for k, v in info.items()}}

    modes = {m: m.training for m in net.modules()}
    net.eval()  # dropout off; norms in their inference form (batch norm's running statistics)
    try:
        with torch.no_grad():  # an inference graph: no autograd bookkeeping traced into the package
            program = torch.export.export(net, (example,), dynamic_shapes=(dims,))
    finally:
        for m, mode in modes.items():
            m.train(mode)

    # Compile into a temporary file beside `path`, then rename (write_atomic): the C++ compile takes minutes
    # for a full generator, and an interrupted or failed one must neither leave a truncated package that
    # translate would try to load nor replace a good package. The temporary name must end in .pt2
    # (aoti_compile_and_package insists); its stem becomes the archive's internal folder name, which the
    # loader discovers, so the rename does not matter to it.
    def compile_to(tmp: Path) -> None:
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs=configs)

    return write_atomic(path, compile_to, suffix=".pt2")


def _package_metadata(path: Path) -> dict[str, str]:
    """The package's metadata as stored in its zip, read before loading it: loading puts the weights on
    the device, and a package loaded for the wrong device fails with an opaque C++ message. {} when this
    torch's package layout keeps no metadata file (the runner then checks after loading)."""
    hint = f"export one with `fastcycle export --aoti {path}`"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(_AOTI_DIR in name for name in names):
                raise UserError(f"{path} is a zip file but not an AOTInductor package; {hint}")
            meta = [n for n in names if _AOTI_DIR in n and n.endswith("_metadata.json")]
            return json.loads(archive.read(meta[0])) if meta else {}
    except zipfile.BadZipFile as e:
        raise UserError(f"{path} is not an AOTInductor package (not a .pt2 zip archive); {hint}") from e
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); check its permissions") from e
    except ValueError as e:  # a damaged metadata file
        raise UserError(f"{path} is a damaged AOTInductor package ({e}); re-export it") from e


class AotiRunner:
    """A compiled .pt2 package as a translate backend (a fastcycle.runner.Runner)."""

    name = "aoti"

    def __init__(self, path: str | Path, device: torch.device):
        path, device = Path(path), torch.device(device)
        if not path.is_file():
            from fastcycle.export.ort import _missing

            raise UserError(_missing(path, "--aoti", "--dynamic-hw"))
        meta = _package_metadata(path)
        fix = f"re-export it with `fastcycle export --aoti {path} --device {device.type}`"
        built_for = meta.get("AOTI_DEVICE_KEY")
        if built_for is not None and built_for != device.type:
            raise UserError(f"{path} was compiled for {built_for}, not {device.type}; {fix}")
        kw = {"device_index": device.index} if device.index is not None else {}  # -1: the current GPU
        try:
            self.model = torch._inductor.aoti_load_package(str(path), **kw)
        except RuntimeError as e:  # miniz, the C++ loader and the dlopen of the .so all raise RuntimeError
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load AOTInductor package {path}: {first}; {fix}") from e
        meta = self.model.get_metadata()
        if meta.get("AOTI_DEVICE_KEY", device.type) != device.type:
            raise UserError(f"{path} was compiled for {meta['AOTI_DEVICE_KEY']}, not {device.type}; {fix}")
        if "fastcycle.max_batch" not in meta:
            raise UserError(f"{path} was not exported by `fastcycle export` (no fastcycle metadata); {fix}")
        self.path, self.device, self.meta = path, device, meta
        self.max_batch = int(meta["fastcycle.max_batch"])
        self.channels = int(meta["fastcycle.channels"])
        self.input_nc = self.channels
        self.output_nc = int(meta.get("fastcycle.output_channels", self.channels))
        self.precision = "fp32"  # packages are compiled from the fp32 generator
        h, w = int(meta["fastcycle.height"]), int(meta["fastcycle.width"])
        self.hw = (h, w) if h and w else None  # None: any multiple of 4 in min_hw..max_hw
        self.hw_range = int(meta["fastcycle.min_hw"]), int(meta["fastcycle.max_hw"])
        self.size_multiple = UNRECORDED_SIZE_MULTIPLE  # the package's metadata does not record it
        size = (
            f"{h}x{w}" if self.hw else f"any HxW (multiples of 4 in {self.hw_range[0]}..{self.hw_range[1]})"
        )
        self.note = f"AOTInductor package {path.name} ({device}, batch 1..{self.max_batch}, {size})"

    def _check(self, x: torch.Tensor) -> None:
        """UserError unless x fits the shape the package was compiled for (AOTI itself never checks)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise UserError(
                f"{self.path.name} takes (N, {self.channels}, H, W) batches, got shape {tuple(x.shape)}"
            )
        n, _, h, w = x.shape
        if not 1 <= n <= self.max_batch:
            raise UserError(
                f"a batch of {n} does not fit {self.path.name}, exported for at most {self.max_batch}; "
                f"use --batch-size {self.max_batch} or less, or re-export with a larger --batch"
            )
        if self.hw is not None and (h, w) != self.hw:
            raise UserError(
                f"{self.path.name} was exported for {self.hw[0]}x{self.hw[1]} images, got {h}x{w}; "
                "resize the images or re-export with --dynamic-hw"
            )
        lo, hi = self.hw_range
        if self.hw is None and not (h % 4 == 0 and w % 4 == 0 and lo <= min(h, w) and max(h, w) <= hi):
            raise UserError(
                f"{self.path.name} takes H and W that are multiples of 4 in {lo}..{hi}, got {h}x{w}; "
                "pad or resize the images"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) float32 in [-1, 1], same out
        self._check(x)
        if x.device.type != self.device.type:
            raise ValueError(f"input is on {x.device}, the package runs on {self.device}")
        # Contiguous float32: the compiled kernels hard-code the example's dtype and NCHW strides, and
        # a channels-last input would be read as garbage, not rejected.
        return self.model(x.float().contiguous())
