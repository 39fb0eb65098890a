"""Generator weights as safetensors: no pickle, so loading them can never run code.

The file holds one generator's state dict and, in its metadata, the architecture (netG, ngf, norm,
dropout), the direction and the fastcycle version, so `fastcycle translate --checkpoint G.safetensors`
rebuilds the network without flags.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from fastcycle.atomic import write_atomic
from fastcycle.errors import UserError

ARCH_KEYS = ("netG", "ngf", "norm", "dropout", "nz")


def save_generator(net: nn.Module, path: str | Path, arch: dict, direction: str) -> Path:
    from safetensors.torch import save_file

    from fastcycle import __version__

    meta = {"fastcycle.version": __version__, "fastcycle.direction": direction}
    meta["fastcycle.arch"] = json.dumps({k: arch.get(k, 100) if k == "nz" else arch[k] for k in ARCH_KEYS})
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return write_atomic(path, lambda tmp: save_file(weights, str(tmp), meta))


def load_generator_file(path: str | Path, kernels: str = "torch") -> nn.Module:
    from safetensors import SafetensorError, safe_open

    from fastcycle.checkpoint import load_weights
    from fastcycle.models import build_generator

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    if "fastcycle.arch" not in meta:
        raise UserError(f"{path} has no fastcycle metadata; export it with `fastcycle export --safetensors`")
    arch = json.loads(meta["fastcycle.arch"])
    net = build_generator(
        arch["netG"],
        ngf=arch["ngf"],
        norm=arch["norm"],
        dropout=arch["dropout"],
        kernels=kernels,
        nz=arch.get("nz", 100),  # absent in files written before DCGAN support
    )
    return load_weights(net, weights, str(path))
