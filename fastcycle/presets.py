"""Presets: plain functions returning a full, valid TrainConfig (torchtitan's style). `--preset` picks one;
without it, `--model`'s own (MODEL_PRESETS) or, for CycleGAN, `demo` without --data and `cyclegan` with it.
"""

from __future__ import annotations

from fastcycle.config import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig


def cyclegan() -> TrainConfig:
    """The paper's and the reference's defaults (horse2zebra etc. at 256x256)."""
    return TrainConfig()


def demo() -> TrainConfig:
    """The built-in demo: small tiles and a small model, tuned to learn in minutes on a laptop CPU.

    A plain CycleGAN at lr 2e-4 gains almost nothing in a few CPU minutes, so this preset trades model
    size for steps: a 6-block generator with 16 filters, 64x64 crops of 80x80 tiles, batch 4, lr 1e-3
    for 9 epochs then 9 of decay (396 steps). The schedule is sized to the quickstart's promise of a
    few minutes on the slowest CPU it serves, 2 cores with AVX2 and no native bf16, where `--amp` stays
    fp32 (tests/test_demo.py holds that CPU's measured rate and checks the budget), and still ends
    over 4 dB above doing nothing (seeds 0-4). Batch norm instead of instance norm: the demo's A -> B
    map is a colour grade, and instance norm removes each image's per-channel mean and contrast, the
    very thing the generator must read. The identity loss stays at the paper's 0.5: without it, most
    seeds settle on an inverted solution (light <-> dark, which still cycles and fools a small
    discriminator) and score ~8 dB. The generator EMA smooths the GAN's step-to-step colour oscillation
    for the final evaluation.
    """
    cfg = TrainConfig()
    cfg.model = ModelConfig(
        netG="resnet_6blocks", ngf=16, ndf=16, n_layers_D=2, netD="n_layers", norm="batch"
    )
    # Eight 80x80 PNGs per step decode in about a millisecond: worker processes would only add start-up.
    cfg.data = DataConfig(preprocess="crop", load_size=80, crop_size=64, num_workers=0)
    cfg.optim = OptimConfig(lr=1e-3, n_epochs=9, n_epochs_decay=9, batch_size=4, ema_decay=0.99)
    cfg.run = RunConfig(name="demo", log_every=25, sample_every=200, save_every=500)
    return cfg


def pix2pix() -> TrainConfig:
    """The reference's pix2pix defaults: U-Net 256, conditional 70x70 PatchGAN, batch norm, vanilla GAN
    + 100 x L1, dropout in the U-Net as its noise, no image pool."""
    cfg = TrainConfig()
    cfg.model = ModelConfig(model="pix2pix", netG="unet_256", norm="batch", dropout=True)
    cfg.loss = LossConfig(gan_mode="vanilla", pool_size=0, lambda_identity=0.0)
    cfg.run = RunConfig(name="pix2pix")
    return cfg


def dcgan() -> TrainConfig:
    """DCGAN (Radford et al. 2016) on one folder of images: 64x64, batch 128, Adam 2e-4 / beta1 0.5,
    batch norm, BCE, 25 epochs at a constant rate."""
    cfg = TrainConfig()
    cfg.model = ModelConfig(model="dcgan", netG="dcgan", netD="dcgan", norm="batch")
    cfg.data = DataConfig(load_size=64, crop_size=64)
    cfg.loss = LossConfig(gan_mode="vanilla", pool_size=0, lambda_identity=0.0)
    cfg.optim = OptimConfig(n_epochs=25, n_epochs_decay=0, batch_size=128)
    cfg.run = RunConfig(name="dcgan", sample_every=500)
    return cfg


def semi_supervised() -> TrainConfig:
    """Semi-supervised multitask CycleGAN (the male <-> female project): a class head on each
    discriminator, batch 16 with batch norm, real targets drawn from [0.7, 1.2]."""
    cfg = TrainConfig()
    cfg.model = ModelConfig(norm="batch", aux_classifier=True)
    cfg.loss = LossConfig(label_smoothing="0.7,1.2")
    cfg.optim = OptimConfig(batch_size=16)
    cfg.run = RunConfig(name="semi_supervised")
    return cfg


PRESETS = {
    "cyclegan": cyclegan,
    "demo": demo,
    "pix2pix": pix2pix,
    "dcgan": dcgan,
    "semi_supervised": semi_supervised,
}
MODEL_PRESETS = {"cycle_gan": "cyclegan", "pix2pix": "pix2pix", "dcgan": "dcgan"}  # --model's defaults

# The fields a distillation student's config takes from its teacher's (`fastcycle distill`): the
# discriminator, norm and initialisation, the data and its loading, D's objective, the schedule and the
# logging cadence. Its other fields are its own defaults, except those derived from the teacher
# (netG, ngf, the data's path and direction, the run name: fastcycle.train.distill.teacher.student_config);
# not the runtime choices, which belong to the machine.
STUDENT_INHERITS = (
    *("input_nc", "output_nc"),
    *("netD", "ndf", "n_layers_D", "norm", "init_type", "init_gain", "nz"),
    *("preprocess", "load_size", "crop_size", "no_flip", "serial_batches", "max_dataset_size"),
    *("num_workers", "loader", "prefetch", "cache_budget_gb"),
    *("gan_mode", "lambda_gp"),
    *("lr", "beta1", "n_epochs", "n_epochs_decay", "lr_policy", "lr_decay_iters", "batch_size", "ema_decay"),
    *("log_every", "sample_every", "save_every"),
)
