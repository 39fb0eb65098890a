"""A trained generator from any file fastcycle reads, each file read once.

Sources: a fastcycle run folder or checkpoint (its config gives the architecture; the EMA weights when
the run kept them), `.safetensors` generator weights (architecture and direction in the metadata: no
pickle, so loading them can never run code), a reference implementation's run folder
(`latest_net_G_A.pth` for AtoB, `latest_net_G_B.pth` for BtoA, pix2pix's `latest_net_G.pth`) or any
reference `.pth` generator state dict, whose architecture the caller gives; what it leaves out is
ModelConfig's default, the paper's (resnet_9blocks, ngf 64, instance norm, no dropout).

`read_generator_file` reads the file once; the GeneratorFile it returns builds the generator of either
direction from what was read (`translate --html` needs G_AB and G_BA, export the training config).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastcycle.atomic import write_atomic
from fastcycle.checkpoint import CHECKPOINT_NAME, FORMAT, check_checkpoint, load_weights, safe_load
from fastcycle.choices import CYCLE_GENERATORS, DIRECTIONS
from fastcycle.config import ModelConfig, TrainConfig
from fastcycle.errors import UserError
from fastcycle.models import build_generator

# What builds a generator. Files written before input_nc/output_nc existed hold RGB generators:
# architecture() fills in ModelConfig's default, 3.
ARCH_KEYS = ("netG", "ngf", "norm", "dropout", "nz", "input_nc", "output_nc")
# The reference's CycleGAN run folders name the A -> B generator G_A and the B -> A one G_B; pix2pix's is G.
_REFERENCE_FILES = {"AtoB": "latest_net_G_A.pth", "BtoA": "latest_net_G_B.pth"}
_REFERENCE_PIX2PIX = "latest_net_G.pth"


def architecture(given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The generator architecture `given` describes (a ModelConfig dict, CLI flags), completed with
    ModelConfig's defaults."""
    defaults, given = ModelConfig(), given or {}
    return {k: given[k] if given.get(k) is not None else getattr(defaults, k) for k in ARCH_KEYS}


def _build(arch: Mapping[str, Any], kernels: str) -> nn.Module:
    sizes = {k: arch[k] for k in ARCH_KEYS if k != "netG"}
    return build_generator(arch["netG"], kernels=kernels, **sizes)


def image_channels(net: nn.Module) -> tuple[int, int]:
    """(input_nc, output_nc) of an image-to-image generator, read off its first and last convolution
    (every generator family begins and ends with one; a DCGAN generator's first takes nz)."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    return convs[0].in_channels, convs[-1].out_channels


@dataclass
class GeneratorFile:
    path: Path  # the file that was read
    kind: str  # "checkpoint" (fastcycle), "safetensors" or "state_dict" (reference .pth)
    weights: dict  # the checkpoint's checked state, or the generator's state dict
    arch: dict[str, Any]  # ARCH_KEYS -> value
    config: dict | None = None  # a fastcycle run's training config

    @property
    def model(self) -> str | None:
        """--model of a fastcycle run (cycle_gan, pix2pix, dcgan); None for other files."""
        return None if self.config is None else self.config["model"].get("model", "cycle_gan")

    def generator(self, direction: str = "AtoB", kernels: str = "torch") -> nn.Module:
        """The generator in eval mode without gradients; `direction` picks a CycleGAN run's G_AB or G_BA
        (other files hold one generator)."""
        if self.kind == "checkpoint":
            net = generator_from_checkpoint(self.weights, direction, kernels, str(self.path))
        else:
            net = load_weights(_build(self.arch, kernels), self.weights, str(self.path))
        return net.eval().requires_grad_(False)


def resolve_source(source: str | os.PathLike, direction: str) -> Path:
    """A run folder -> the file in it that holds `direction`'s generator; a file as it is."""
    path = Path(source)
    if not path.is_dir():
        return path
    for name in (CHECKPOINT_NAME, _REFERENCE_FILES[direction]):
        if (path / name).exists():
            return path / name
    if (path / _REFERENCE_PIX2PIX).exists() and direction == "AtoB":
        return path / _REFERENCE_PIX2PIX
    raise UserError(f"{source} holds neither {CHECKPOINT_NAME} nor {_REFERENCE_FILES[direction]}")


def read_generator_file(
    source: str | os.PathLike, direction: str = "AtoB", arch: Mapping[str, Any] | None = None
) -> GeneratorFile:
    """Read the file holding `direction`'s generator, once. `arch`: a reference .pth's architecture."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction {direction!r} is not one of: {', '.join(DIRECTIONS)}")
    path = resolve_source(source, direction)
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    obj = safe_load(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state = check_checkpoint(obj, path)
        model = TrainConfig.from_dict(state["config"]).model
        return GeneratorFile(path, "checkpoint", state, architecture(vars(model)), state["config"])
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return GeneratorFile(path, "state_dict", obj, architecture(arch))
    raise UserError(f"{path} is neither a fastcycle checkpoint nor a generator state dict")


def load_generator(
    source: str | os.PathLike, direction: str = "AtoB", kernels: str = "torch", **arch: Any
) -> nn.Module:
    """read_generator_file(source, direction, arch).generator(direction, kernels)."""
    return read_generator_file(source, direction, arch).generator(direction, kernels)


def generator_from_checkpoint(state: dict, direction: str, kernels: str, source: str) -> nn.Module:
    """The trained generator of a loaded fastcycle checkpoint: CycleGAN's G_AB or G_BA, pix2pix's G
    (one direction, the one it was trained for), DCGAN's G (noise -> image, for `fastcycle sample`)."""
    m = TrainConfig.from_dict(state["config"]).model
    if m.model == "cycle_gan":
        name = CYCLE_GENERATORS[direction]
    elif direction != "AtoB":
        raise UserError(
            f"{source} is a {m.model} run, whose generator works one way (the --direction it was trained "
            "or distilled for); drop --direction BtoA"
        )
    else:
        name = "G"
    arch = architecture(vars(m))
    if name == "G_BA":  # B -> A: output_nc channels in, input_nc out
        arch["input_nc"], arch["output_nc"] = arch["output_nc"], arch["input_nc"]
    net = _build(arch, kernels)
    # Prefer the EMA weights when the run kept them: they are what the run's samples showed.
    weights = state["model"]["ema"].get(name) or state["model"]["nets"][name]
    return load_weights(net, weights, f"{source} ({name})")


# --- safetensors ------------------------------------------------------------------------------------


def save_generator(net: nn.Module, path: str | Path, arch: Mapping[str, Any], direction: str) -> Path:
    """The generator's weights as safetensors, its architecture and direction in the metadata."""
    from safetensors.torch import save_file

    from fastcycle.version import __version__

    meta = {"fastcycle.version": __version__, "fastcycle.direction": direction}
    meta["fastcycle.arch"] = json.dumps(architecture(arch))
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return write_atomic(path, lambda tmp: save_file(weights, str(tmp), meta))


def _read_safetensors(path: Path) -> GeneratorFile:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    if "fastcycle.arch" not in meta:
        raise UserError(f"{path} has no fastcycle metadata; export it with `fastcycle export --safetensors`")
    # nz is absent in files written before DCGAN support: architecture() fills the default.
    return GeneratorFile(path, "safetensors", weights, architecture(json.loads(meta["fastcycle.arch"])))
