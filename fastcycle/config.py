"""Typed training configuration: one dataclass per component, presets, and validated overrides.

Field names are the reference implementation's option names (`lambda_A`, `n_epochs_decay`,
`pool_size`); the CLI flag of a field is its name in kebab-case (`--lambda-A`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from fastcycle.choices import (
    AMP_DTYPES,
    CROPPING,
    DIRECTIONS,
    DISCRIMINATORS,
    GAN_MODES,
    GENERATORS,
    INIT_TYPES,
    KERNEL_CHOICES,
    LOADERS,
    LR_POLICIES,
    MODELS,
    NORMS,
    PREPROCESS,
)
from fastcycle.errors import UserError
from fastcycle.generator_specs import GENERATOR_SPECS

IMAGE_CHANNELS = (1, 3)  # what the loaders decode every file to: grayscale or RGB


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    model: str = _f(
        "cycle_gan",
        "what to train: cycle_gan (unpaired A <-> B), pix2pix (paired A -> B) or dcgan (noise -> image); "
        "distill is `fastcycle distill`'s",
        choices=MODELS,
    )
    input_nc: int = _f(3, "# of input image channels: 3 for RGB and 1 for grayscale (domain A; not dcgan)")
    output_nc: int = _f(3, "# of output image channels: 3 for RGB and 1 for grayscale (domain B)")
    netG: str = _f("resnet_9blocks", "generator architecture (dcgan: --model dcgan's)", choices=GENERATORS)
    netD: str = _f(
        "basic",
        "discriminator: basic (70x70 PatchGAN), n_layers, pixel (1x1 PatchGAN) or dcgan",
        choices=DISCRIMINATORS,
    )
    ngf: int = _f(64, "generator filters in the first conv layer")
    ndf: int = _f(64, "discriminator filters in the first conv layer")
    n_layers_D: int = _f(3, "discriminator depth when --netD n_layers")
    norm: str = _f("instance", "normalisation layer", choices=NORMS)
    dropout: bool = _f(
        False, "dropout(0.5) in the residual / U-Net blocks (--no-dropout: the reference's --no_dropout)"
    )
    init_type: str = _f("normal", "weight initialisation", choices=INIT_TYPES)
    init_gain: float = _f(0.02, "scale of the normal/xavier/orthogonal initialisation")
    nz: int = _f(100, "length of the DCGAN noise vector z")
    aux_classifier: bool = _f(
        False, "semi-supervised: a class head on each discriminator, trained on --labels-A/--labels-B"
    )


@dataclass
class DataConfig:
    data: str | None = _f(
        None,
        "dataset: trainA/ and trainB/ (cycle_gan); train/ of A|B images or trainA/ + trainB/ with matching "
        "names (pix2pix); a folder of images (dcgan); omitted: the built-in CycleGAN demo",
    )
    direction: str = _f(
        "AtoB", "pix2pix: AtoB translates the left/A images into the right/B ones", choices=DIRECTIONS
    )
    labels_A: str | None = _f(
        None, "--aux-classifier: CSV of filename,label for trainA (unlisted: unlabelled)"
    )
    labels_B: str | None = _f(None, "--aux-classifier: CSV of filename,label for trainB")
    preprocess: str = _f("resize_and_crop", "resize/crop policy at load time", choices=PREPROCESS)
    load_size: int = _f(286, "scale images to this size before cropping")
    crop_size: int = _f(256, "then crop to this size (a multiple of 4)")
    no_flip: bool = _f(False, "do not flip images horizontally for augmentation")
    serial_batches: bool = _f(False, "pair A[i] with B[i] instead of a random B")
    max_dataset_size: int = _f(0, "use at most this many images per domain (0: all)")
    num_workers: int = _f(4, "decode workers: DataLoader processes (torch), CPU threads (dali, gpu-cache)")
    loader: str = _f(
        "auto",
        "torch (PIL in workers), dali (GPU decode) or gpu-cache (decoded once into device memory); "
        "auto: gpu-cache on CUDA when the dataset fits --cache-budget-gb, else dali if installed, else torch",
        choices=LOADERS,
    )
    prefetch: int = _f(2, "batches the dali loader prepares ahead of the step")
    cache_budget_gb: float = _f(0.0, "device memory gpu-cache may fill, GiB (0: a quarter of the device's)")


@dataclass
class LossConfig:
    gan_mode: str = _f("lsgan", "GAN objective", choices=GAN_MODES)
    lambda_A: float = _f(10.0, "weight of cycle loss A -> B -> A")
    lambda_B: float = _f(10.0, "weight of cycle loss B -> A -> B")
    lambda_identity: float = _f(0.5, "identity loss weight, relative to lambda_A/lambda_B (0: off)")
    pool_size: int = _f(50, "history of generated images shown to the discriminators (0: none)")
    lambda_gp: float = _f(10.0, "weight of the gradient penalty with --gan-mode wgangp")
    lambda_L1: float = _f(100.0, "pix2pix: weight of the L1 loss to the paired target")
    lambda_cls: float = _f(1.0, "--aux-classifier: weight of the class losses (D on reals, G on fakes)")
    label_smoothing: str = _f(
        "", "one-sided: D's real targets, a value (0.9) or a range LO,HI drawn per logit (0.7,1.2); empty: 1"
    )


@dataclass
class OptimConfig:
    lr: float = _f(2e-4, "Adam learning rate")
    beta1: float = _f(0.5, "Adam beta1")
    n_epochs: int = _f(100, "epochs at the initial learning rate")
    n_epochs_decay: int = _f(100, "epochs of linear decay of the learning rate to zero")
    lr_policy: str = _f(
        "linear",
        "linear (constant, then linear to zero), step (x0.1 every --lr-decay-iters epochs), plateau "
        "(x0.2 when the epoch's generator loss stalls for 5 epochs) or cosine (the reference's, "
        "period --n-epochs)",
        choices=LR_POLICIES,
    )
    lr_decay_iters: int = _f(50, "--lr-policy step: epochs between the x0.1 steps")
    epoch_count: int = _f(
        1, "number of the first epoch (the reference's --epoch_count): with --init-weights from N-1 epochs, N"
    )
    batch_size: int = _f(1, "image pairs per step")
    ema_decay: float = _f(0.0, "keep an exponential moving average of the generators (0: off, e.g. 0.999)")


@dataclass
class RuntimeConfig:
    device: str = _f("auto", "cuda, cuda:N, cpu or auto")
    amp: bool = _f(False, "mixed precision: bf16 where the device supports it fast, else fp16 on CUDA")
    amp_dtype: str = _f("auto", "autocast dtype for --amp; fp16 uses a GradScaler", choices=AMP_DTYPES)
    channels_last: bool = _f(False, "NHWC memory format (tensor cores read it without transposes)")
    compile: bool = _f(False, "torch.compile each network (the step itself stays eager)")
    kernels: str = _f(
        "auto",
        "generator layers: triton (fused kernels) or torch; auto: triton on CUDA when Triton works",
        choices=KERNEL_CHOICES,
    )
    seed: int = _f(0, "random seed for weights, data order, augmentation and the image pools")


@dataclass
class RunConfig:
    name: str = _f("experiment", "run name; the default output folder is runs/<name>")
    out: str | None = _f(None, "output folder for checkpoints, metrics and samples")
    resume: bool | str = _f(
        False,
        "continue from the checkpoint in the output folder; auto: when it holds one, else start a new run "
        "(one command for every start of a requeued job)",
        modes=("auto",),
    )
    init_weights: str | None = _f(
        None, "start the networks from a fastcycle run/checkpoint or a reference checkpoints folder"
    )
    max_steps: int = _f(0, "stop after this many steps (0: train all epochs)")
    log_every: int = _f(50, "steps between metrics lines (each costs one device sync)")
    sample_every: int = _f(500, "steps between sample grids (0: only at the end)")
    save_every: int = _f(1000, "steps between checkpoints (and at the end of every epoch)")
    tensorboard: bool = _f(False, "also log losses, lr and sample grids to <out>/tensorboard")
    eval_every: str = _f(
        "0",
        "FID/KID of the generators on held-out images every N steps (500) or N epochs (2ep), and at the "
        "last step; the best so far kept as checkpoint.best.pt (0: off)",
    )
    eval_images: int = _f(200, "--eval-every: at most this many held-out images per set (the first, sorted)")
    inception_weights: str | None = _f(
        None, "--eval-every: the Inception weights file (default: found as docs/quality.md says)"
    )
    report_fid: bool = _f(
        True,
        "FID and KID in the end-of-run report (the demo's G_AB(testA) vs testB; distill's teacher and "
        "student vs the target domain's test images): Inception-v3, ~8 images/s on a CPU",
    )


@dataclass
class DistillConfig:
    """`fastcycle distill`: the teacher and the student's objective (the student is model.netG/ngf)."""

    teacher: str | None = _f(None, "the teacher's checkpoint (a fastcycle CycleGAN or pix2pix run)")
    teacher_sha256: str = _f("", "the teacher checkpoint's checksum when the distillation started")
    lambda_recon: float = _f(10.0, "weight of the L1 loss between the student's and the teacher's outputs")
    lambda_distill: float = _f(0.01, "weight of the feature loss (adapted student vs teacher features, L2)")
    lambda_gan: float = _f(0.0, "weight of the adversarial loss, D started from the teacher's (0: off)")


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "runtime": RuntimeConfig,
    "run": RunConfig,
    "distill": DistillConfig,
}


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=RunConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild and validate a config (e.g. from a checkpoint): an unknown section, an unknown key or
        a key in another section than its own (`model.lr`) is one UserError. Keys absent from `d` (options
        added since it was written) take their defaults."""
        cfg, index = cls(), field_index()
        for section, values in d.items():
            if section not in SECTIONS:
                raise UserError(f"unknown config section {section!r}")
            if not isinstance(values, dict):
                raise UserError(f"config section {section!r} holds {type(values).__name__}, not its options")
            for name in values:
                home = index.get(name, (section, None))[0]
                if home != section:
                    raise UserError(
                        f"config option {section}.{name} is misplaced: {flag(name)} belongs in the "
                        f"{home} section ({home}.{name})"
                    )
            apply_overrides(cfg, values)
        return validate(cfg)


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every field name -> (section, field). Names are unique across sections, so flags are flat."""
    index = {}
    for section, klass in SECTIONS.items():
        for f in dataclasses.fields(klass):
            assert f.name not in index, f"duplicate config field {f.name}"
            index[f.name] = (section, f)
    return index


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Set fields by name, in place; unknown names get a 'did you mean' and wrong types are rejected."""
    index = field_index()
    for name, value in overrides.items():
        if name not in index:
            close = difflib.get_close_matches(name, index, n=1)
            hint = f"; did you mean {flag(close[0])}?" if close else ""
            raise UserError(f"unknown option {flag(name)}{hint}")
        section, f = index[name]
        setattr(getattr(cfg, section), name, _coerce(name, f, value))
    return cfg


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    kind = str(f.type)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "bool | str": isinstance(value, bool | str),  # on/off, or a mode named by the field's `modes`
        "str": isinstance(value, str),
        "str | None": value is None or isinstance(value, str),
    }.get(kind, True)
    if not ok:
        raise UserError(f"{flag(name)} expects {kind}, got {value!r}")
    return float(value) if kind == "float" else value


_POSITIVE = (
    *("ngf", "ndf", "n_layers_D", "load_size", "crop_size", "batch_size", "lr", "log_every", "save_every"),
    *("n_epochs", "prefetch"),
)
_NON_NEGATIVE = (
    *("n_epochs_decay", "lambda_A", "lambda_B", "lambda_identity", "pool_size", "max_steps", "sample_every"),
    *("num_workers", "init_gain", "max_dataset_size", "cache_budget_gb"),
)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise UserError naming the first inconsistent value; returns cfg for chaining."""
    index = field_index()
    values = {name: getattr(getattr(cfg, section), name) for name, (section, _) in index.items()}
    for name, (_, f) in index.items():
        value = values[name]
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise UserError(f"{flag(name)} {value!r} is not one of: {', '.join(choices)}")
        modes = f.metadata.get("modes")
        if modes and not isinstance(value, bool) and value not in modes:
            raise UserError(f"{flag(name)} takes no value or one of: {', '.join(modes)} (got {value!r})")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag(name)} must be a finite number, got {value}")
    d, o = cfg.data, cfg.optim
    for name in _POSITIVE:
        if values[name] <= 0:
            raise UserError(f"{flag(name)} must be positive, got {values[name]}")
    for name in _NON_NEGATIVE:
        if values[name] < 0:
            raise UserError(f"{flag(name)} must be >= 0, got {values[name]}")
    _validate_eval(cfg)
    if not 0.0 <= o.beta1 < 1.0:
        raise UserError(f"--beta1 must be in [0, 1), got {o.beta1}")
    if not 0.0 <= o.ema_decay < 1.0:
        raise UserError(f"--ema-decay must be in [0, 1), got {o.ema_decay}")
    if d.preprocess in ("resize_and_crop", "scale_width_and_crop") and d.crop_size > d.load_size:
        raise UserError(
            f"--crop-size {d.crop_size} is larger than --load-size {d.load_size}; "
            "lower --crop-size or raise --load-size"
        )
    if d.preprocess != "none" and d.crop_size % 4:
        raise UserError(
            f"--crop-size {d.crop_size} is not a multiple of 4, which the ResNet generator's two "
            "downsamplings need; use e.g. " + str(d.crop_size // 4 * 4)
        )
    g = GENERATOR_SPECS[cfg.model.netG]
    if g.family == "unet" and (d.preprocess not in CROPPING or d.crop_size % g.size_multiple):
        raise UserError(
            f"--netG {g.name} halves the image {g.num_downs} times, so it needs crops that are a "
            f"multiple of {g.size_multiple} (--crop-size {d.crop_size}, --preprocess {d.preprocess}); use "
            f"--crop-size {max(g.size_multiple, d.crop_size // g.size_multiple * g.size_multiple)} with a "
            "cropping --preprocess"
        )
    _validate_model(cfg)
    return cfg


def _validate_model(cfg: TrainConfig) -> None:
    """Options that belong to one model family, and the combinations the families need."""
    m, d, lo, o, g = cfg.model, cfg.data, cfg.loss, cfg.optim, GENERATOR_SPECS[cfg.model.netG]
    is_dcgan = m.model == "dcgan"
    if is_dcgan != g.noise or is_dcgan != (m.netD == "dcgan"):
        raise UserError(
            "--model dcgan goes with --netG dcgan --netD dcgan and only with them "
            f"(got --model {m.model} --netG {m.netG} --netD {m.netD}); use --preset dcgan"
        )
    if is_dcgan and (d.crop_size != 64 or d.preprocess not in CROPPING):
        raise UserError(
            f"--model dcgan makes 64x64 images, so it trains on 64x64 crops (got --crop-size {d.crop_size}, "
            f"--preprocess {d.preprocess}); use --crop-size 64 with {', '.join(CROPPING)}"
        )
    if m.nz <= 0:
        raise UserError(f"--nz must be positive, got {m.nz}")
    for name in ("input_nc", "output_nc"):
        if getattr(m, name) not in IMAGE_CHANNELS:
            raise UserError(
                f"{flag(name)} {getattr(m, name)}: images are read as 1 (grayscale) or 3 (RGB) channels; "
                "use 1 or 3"
            )
    if m.model == "cycle_gan" and lo.lambda_identity > 0 and m.input_nc != m.output_nc:
        raise UserError(
            f"the identity loss feeds B images to G_AB, so it needs --input-nc == --output-nc (got "
            f"{m.input_nc} and {m.output_nc}); pass --lambda-identity 0"
        )
    if m.aux_classifier and m.model != "cycle_gan":
        raise UserError("--aux-classifier is for --model cycle_gan; drop it or use --model cycle_gan")
    if not m.aux_classifier and (d.labels_A or d.labels_B):
        raise UserError("--labels-A/--labels-B are read only with --aux-classifier; add it or drop them")
    if m.aux_classifier and m.netD == "pixel":
        raise UserError(
            "--aux-classifier needs a PatchGAN trunk (--netD basic or n_layers), not --netD pixel"
        )
    if m.aux_classifier and not (d.labels_A or d.labels_B):
        raise UserError(
            "--aux-classifier needs labels: pass --labels-A and/or --labels-B (CSV filename,label)"
        )
    if d.data is None and m.model in ("pix2pix", "dcgan"):  # a student reads its teacher's data
        what = "a train/ folder of A|B images" if m.model == "pix2pix" else "a folder of images"
        raise UserError(f"--model {m.model} has no built-in demo: pass --data DIR ({what})")
    if m.model in ("pix2pix", "dcgan") and d.loader not in ("auto", "torch"):  # gpu-cache, DALI: A and B
        raise UserError(f"--model {m.model} reads its data with --loader torch; drop --loader {d.loader}")
    if cfg.runtime.kernels == "triton" and not g.fused_kernels:
        raise UserError(
            f"--kernels triton implements the ResNet generators' layers, not --netG {m.netG}; "
            "use --kernels torch or auto"
        )
    if lo.lambda_gp < 0 or lo.lambda_L1 < 0 or lo.lambda_cls < 0:
        raise UserError("--lambda-gp, --lambda-L1 and --lambda-cls must be >= 0")
    di = cfg.distill
    if min(di.lambda_recon, di.lambda_distill, di.lambda_gan) < 0:
        raise UserError("--lambda-recon, --lambda-distill and --lambda-gan must be >= 0")
    if (m.model == "distill") != bool(di.teacher):  # a teacher is what makes a run a distillation
        raise UserError("--model distill is trained by `fastcycle distill --teacher RUN`, and only it")
    parse_label_smoothing(lo.label_smoothing)
    if o.lr_decay_iters <= 0:
        raise UserError(f"--lr-decay-iters must be positive, got {o.lr_decay_iters}")
    n_epochs = o.n_epochs + o.n_epochs_decay
    if not 1 <= o.epoch_count <= n_epochs:
        raise UserError(
            f"--epoch-count {o.epoch_count} must be between 1 and --n-epochs + --n-epochs-decay ({n_epochs})"
        )


def parse_eval_every(text: str) -> tuple[int, str]:
    """--eval-every: '0' -> (0, "step") (off); '500' -> (500, "step"); '2ep' -> (2, "epoch")."""
    m = re.fullmatch(r"([0-9]+)(ep)?", text.strip())
    if m is None:
        raise UserError(
            f"--eval-every {text!r} is neither a number of steps (e.g. 500) nor of epochs (e.g. 2ep); 0: off"
        )
    return int(m[1]), "epoch" if m[2] else "step"


def _validate_eval(cfg: TrainConfig) -> None:
    r, model = cfg.run, cfg.model.model
    if parse_eval_every(r.eval_every)[0] and model in ("dcgan", "distill"):
        why = {"dcgan": "makes images from noise", "distill": "is measured by its report"}[model]
        raise UserError(
            f"--eval-every measures translations of held-out images; --model {model} {why}: drop --eval-every"
        )
    if r.eval_images < 2:
        raise UserError(
            f"--eval-images must be at least 2 (FID and KID need 2 images per set), got {r.eval_images}"
        )


def parse_label_smoothing(text: str) -> tuple[float, float] | None:
    """'' -> None (real target 1); '0.9' -> (0.9, 0.9); '0.7,1.2' -> (0.7, 1.2): targets ~ U[lo, hi]."""
    if not text.strip():
        return None
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(math.isfinite(v) and v > 0 for v in parts) or parts[0] > parts[1]:
        raise UserError(
            f"--label-smoothing {text!r} is not a real-target value or range; use e.g. 0.9 or 0.7,1.2"
        )
    return parts[0], parts[1]
