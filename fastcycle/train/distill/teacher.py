"""The teacher of a distillation: a finished fastcycle CycleGAN or pix2pix run, identified by its
checkpoint's path and checksum, the networks taken from it, and the student's config derived from it.

A student takes the fields fastcycle.presets.STUDENT_INHERITS names from its teacher's config (data,
schedule, norm, ...; not the runtime choices), so `fastcycle distill --teacher RUN --direction AtoB`
needs no other flag. Its architecture is derived from the teacher's: the generator's mobile counterpart
(fastcycle.generator_specs) at half the teacher's filters, GAN Compression's choice for horse2zebra
(ngf 64 -> 32)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fastcycle.checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint, load_weights, safe_load
from fastcycle.config import DistillConfig, TrainConfig, apply_overrides, field_index, validate
from fastcycle.errors import UserError
from fastcycle.generator_specs import GENERATOR_SPECS
from fastcycle.models import build_discriminator
from fastcycle.presets import STUDENT_INHERITS
from fastcycle.train.distill.features import layout_of
from fastcycle.train.distill.measure import generator_cost
from fastcycle.trained import generator_from_checkpoint


@dataclass
class Teacher:
    path: Path  # the checkpoint file, absolute
    sha256: str  # the checksum stored in it; load_checkpoint checks the contents against it
    config: TrainConfig

    @property
    def family(self) -> str:
        return self.config.model.model


def read_teacher(source: str | Path) -> Teacher:
    """The teacher's config and checksum (its tensors are memory-mapped, not read: the checksum is
    checked where they are loaded, by load_teacher); UserError for a path that holds no usable teacher."""
    path = Path(source)
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    if not path.is_file():
        raise UserError(
            f"--teacher {source}: no fastcycle checkpoint there; pass a run folder or its {CHECKPOINT_NAME}"
        )
    raw = safe_load(path, mmap=True)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or "sha256" not in raw:
        raise UserError(f"--teacher {source} is not a fastcycle training checkpoint; pass a run folder")
    # The family first: a DCGAN's config is named as such even where it would not validate as a teacher's.
    model_section = raw.get("config", {}).get("model", {})
    family = model_section.get("model") if isinstance(model_section, dict) else None
    if family == "dcgan":
        raise UserError(
            f"--teacher {source} is a DCGAN (noise -> image); a teacher translates images: "
            "a cycle_gan or pix2pix run"
        )
    try:
        cfg = TrainConfig.from_dict(raw["config"])
    except UserError as e:
        raise UserError(f"--teacher {source} holds an invalid config: {e}") from None
    if family == "distill":
        raise UserError(
            f"--teacher {source} is itself a distilled student; "
            f"distil from its teacher ({cfg.distill.teacher})"
        )
    return Teacher(path.resolve(), raw["sha256"], cfg)


def default_student(netG: str) -> str:
    """The mobile ResNet with the teacher's block count for a ResNet teacher; else the same generator."""
    return GENERATOR_SPECS[netG].mobile or netG


def student_config(teacher: Teacher, direction: str | None, overrides: dict) -> TrainConfig:
    """The distillation's full config: the student's defaults, the fields STUDENT_INHERITS names taken
    from the teacher, the ones derived from it, then the command line's overrides (names as in
    fastcycle.config). UserError for what cannot be distilled."""
    t = teacher.config
    if teacher.family == "cycle_gan":
        if direction is None:
            raise UserError(
                f"--teacher {teacher.path.parent} is a CycleGAN, with a generator each way: pass --direction "
                "AtoB (its G_AB, trainA -> B) or BtoA (its G_BA)"
            )
    elif direction not in (None, t.data.direction):
        raise UserError(
            f"--teacher {teacher.path.parent} is a pix2pix run, whose generator translates "
            f"{t.data.direction} only; drop --direction {direction}"
        )
    cfg, index = TrainConfig(), field_index()
    for name in STUDENT_INHERITS:
        section = index[name][0]
        setattr(getattr(cfg, section), name, getattr(getattr(t, section), name))
    cfg.model.model, cfg.model.netG = "distill", default_student(t.model.netG)
    cfg.model.ngf = max(t.model.ngf // 2, 1)
    if teacher.family == "cycle_gan" and direction == "BtoA":  # G_BA: output_nc channels in, input_nc out
        cfg.model.input_nc, cfg.model.output_nc = t.model.output_nc, t.model.input_nc
    cfg.data.data = t.data.data and str(Path(t.data.data).resolve())  # the student may run from elsewhere
    cfg.data.direction = direction or t.data.direction
    cfg.run.name = f"{teacher.path.parent.name}_student"
    cfg.distill = DistillConfig(teacher=str(teacher.path), teacher_sha256=teacher.sha256)
    validate(apply_overrides(cfg, overrides))
    _check_pair(cfg, t)
    return cfg


def _check_pair(cfg: TrainConfig, t: TrainConfig) -> None:
    """The student must be cheaper than the teacher, and feature distillation needs matching layouts."""
    s, size = cfg.model, cfg.data.crop_size
    if GENERATOR_SPECS[s.netG].noise:
        raise UserError("--netG dcgan makes images from noise; a student translates images like its teacher")
    macs_s = generator_cost(s.netG, s.ngf, s.norm, size)[1]
    macs_t = generator_cost(t.model.netG, t.model.ngf, t.model.norm, size)[1]
    if macs_s >= macs_t:
        raise UserError(
            f"the student --netG {s.netG} --ngf {s.ngf} ({macs_s / 1e9:.2f} G MACs at {size}x{size}) is "
            f"not smaller than the teacher {t.model.netG} ngf {t.model.ngf} ({macs_t / 1e9:.2f} G); "
            "choose fewer filters (--ngf) or blocks"
        )
    if cfg.distill.lambda_distill > 0 and layout_of(s.netG) != layout_of(t.model.netG):
        raise UserError(
            "feature distillation compares activations at the same resolution: a ResNet teacher with a "
            f"ResNet or mobile student, a U-Net with a U-Net (teacher {t.model.netG}, student {s.netG}); "
            "pass --lambda-distill 0 to distil the outputs only"
        )


def load_teacher(cfg: TrainConfig, fix: str = "distil anew into another --out") -> tuple[dict, TrainConfig]:
    """The teacher's full checkpoint state and config, its contents checked against the checksum
    recorded in cfg when the distillation started; `fix` ends the error line when it has changed."""
    di = cfg.distill
    current = read_teacher(di.teacher)
    if current.sha256 != di.teacher_sha256:
        raise UserError(
            f"the teacher {di.teacher} changed since this student was distilled (its checksum differs); {fix}"
        )
    state = load_checkpoint(current.path)
    return state, current.config


def teacher_generator(state: dict, t: TrainConfig, direction: str, kernels: str, source: str) -> nn.Module:
    """The teacher's generator for `direction` (EMA weights when kept), frozen in eval mode."""
    one_way = "AtoB" if t.model.model != "cycle_gan" else direction  # pix2pix: its only generator
    return generator_from_checkpoint(state, one_way, kernels, source).eval().requires_grad_(False)


def teacher_discriminator(state: dict, t: TrainConfig, direction: str) -> nn.Module:
    """The teacher's discriminator of the output domain, to start the student's adversarial loss from:
    CycleGAN's D_B for AtoB (it judges domain B), D_A for BtoA; pix2pix's conditional D (input_nc +
    output_nc channels)."""
    m = t.model
    pix2pix = m.model == "pix2pix"
    name = "D" if pix2pix else ("D_B" if direction == "AtoB" else "D_A")
    nc = m.input_nc + m.output_nc if pix2pix else (m.output_nc if direction == "AtoB" else m.input_nc)
    net = build_discriminator(m.netD, ndf=m.ndf, n_layers=m.n_layers_D, norm=m.norm, input_nc=nc)
    weights = {k: v for k, v in state["model"]["nets"][name].items() if not k.startswith("cls.")}
    return load_weights(net, weights, f"the teacher's {name}")  # a class head (--aux-classifier) is left out
