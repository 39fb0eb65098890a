"""An independent oracle for the reference architecture: the forward pass written directly from a
state dict with torch.nn.functional, following junyanz/pytorch-CycleGAN-and-pix2pix's layer order.

It shares no code with fastcycle.models, so agreement checks both the key layout and the numerics.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

# A copy of shared/reference/reference_state_dicts.json: keys, shapes and parameter counts of the
# reference networks, recorded from junyanz/pytorch-CycleGAN-and-pix2pix.
FACTS = json.loads((Path(__file__).parent / "data" / "reference_state_dicts.json").read_text())


def facts(name: str) -> dict:
    return FACTS[name]


def _norm(x, sd, key, norm):
    if norm == "instance":
        return F.instance_norm(x, eps=1e-5)
    return F.batch_norm(
        x,
        sd[f"{key}.running_mean"],
        sd[f"{key}.running_var"],
        sd[f"{key}.weight"],
        sd[f"{key}.bias"],
        training=False,
        eps=1e-5,
    )


def _conv(x, sd, key, **kw):
    return F.conv2d(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"), **kw)


def resnet_generator(sd: dict, x: torch.Tensor, n_blocks: int, norm: str = "instance") -> torch.Tensor:
    """Reference ResnetGenerator forward (eval mode for batch norm) from its state dict."""
    x = F.relu(_norm(_conv(F.pad(x, (3,) * 4, mode="reflect"), sd, "model.1"), sd, "model.2", norm))
    x = F.relu(_norm(_conv(x, sd, "model.4", stride=2, padding=1), sd, "model.5", norm))
    x = F.relu(_norm(_conv(x, sd, "model.7", stride=2, padding=1), sd, "model.8", norm))
    for i in range(10, 10 + n_blocks):
        k = f"model.{i}.conv_block"
        y = F.relu(_norm(_conv(F.pad(x, (1,) * 4, mode="reflect"), sd, f"{k}.1"), sd, f"{k}.2", norm))
        y = _norm(_conv(F.pad(y, (1,) * 4, mode="reflect"), sd, f"{k}.5"), sd, f"{k}.6", norm)
        x = x + y
    i = 10 + n_blocks
    for j in (i, i + 3):
        k = f"model.{j}"
        x = F.conv_transpose2d(
            x, sd[f"{k}.weight"], sd.get(f"{k}.bias"), stride=2, padding=1, output_padding=1
        )
        x = F.relu(_norm(x, sd, f"model.{j + 1}", norm))
    x = _conv(F.pad(x, (3,) * 4, mode="reflect"), sd, f"model.{i + 7}")
    return torch.tanh(x)


def basic_discriminator(sd: dict, x: torch.Tensor, norm: str = "instance") -> torch.Tensor:
    """Reference NLayerDiscriminator(n_layers=3) forward from its state dict."""
    x = F.leaky_relu(_conv(x, sd, "model.0", stride=2, padding=1), 0.2)
    for conv, nrm, stride in (
        ("model.2", "model.3", 2),
        ("model.5", "model.6", 2),
        ("model.8", "model.9", 1),
    ):
        x = F.leaky_relu(_norm(_conv(x, sd, conv, stride=stride, padding=1), sd, nrm, norm), 0.2)
    return _conv(x, sd, "model.11", stride=1, padding=1)


def _conv_t(x, sd, key):
    return F.conv_transpose2d(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"), stride=2, padding=1)


def _unet_block(sd: dict, x: torch.Tensor, key: str, levels: int, norm: str) -> torch.Tensor:
    """A reference UnetSkipConnectionBlock below the outermost; `levels` blocks from here inward.

    (The reference's in-place LeakyReLU also activates the concatenated x; the ReLU that follows the
    concatenation makes that invisible, so this concatenates x itself.)
    """
    key = f"{key}.model"  # the block's nn.Sequential
    y = _conv(F.leaky_relu(x, 0.2), sd, f"{key}.1", stride=2, padding=1)
    if levels == 1:  # innermost: [lrelu, conv, relu, convT, norm]
        y = _norm(_conv_t(F.relu(y), sd, f"{key}.3"), sd, f"{key}.4", norm)
    else:  # [lrelu, conv, norm, block, relu, convT, norm]
        y = _unet_block(sd, _norm(y, sd, f"{key}.2", norm), f"{key}.3", levels - 1, norm)
        y = _norm(_conv_t(F.relu(y), sd, f"{key}.5"), sd, f"{key}.6", norm)
    return torch.cat([x, y], 1)


def unet_generator(sd: dict, x: torch.Tensor, num_downs: int, norm: str = "instance") -> torch.Tensor:
    """Reference UnetGenerator forward (eval mode) from its state dict: [conv, block, relu, convT, tanh]."""
    y = _conv(x, sd, "model.model.0", stride=2, padding=1)
    y = _unet_block(sd, y, "model.model.1", num_downs - 1, norm)
    return torch.tanh(_conv_t(F.relu(y), sd, "model.model.3"))


def pixel_discriminator(sd: dict, x: torch.Tensor, norm: str = "instance") -> torch.Tensor:
    """Reference PixelDiscriminator forward from its state dict: 1x1 convs 64 - 128 - 1."""
    x = F.leaky_relu(_conv(x, sd, "net.0"), 0.2)
    x = F.leaky_relu(_norm(_conv(x, sd, "net.2"), sd, "net.3", norm), 0.2)
    return _conv(x, sd, "net.5")


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the reference's keys and shapes for `name`, filled with plausible values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in facts(name)["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight") and len(shape) == 1:  # batch-norm scale
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.05 * torch.randn(shape, generator=g)
    return sd
