"""The names each option may take: models, architectures, data policies, runtime modes.

A torch-free module (its one import is the torch-free generator table), so that the config, the CLI
(`fastcycle --help`), the data transforms and the models share one list of each without importing torch;
the models check their inputs against them.
"""

from fastcycle.generator_specs import GENERATOR_SPECS

MODELS = ("cycle_gan", "pix2pix", "dcgan", "distill")
GENERATORS = tuple(GENERATOR_SPECS)  # --netG: the generator table's rows, in its order
DISCRIMINATORS = ("basic", "n_layers", "pixel", "dcgan")
NORMS = ("instance", "batch", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
CROPPING = ("resize_and_crop", "crop", "scale_width_and_crop")  # the policies that end in square crops
GAN_MODES = ("lsgan", "vanilla", "wgangp")
LR_POLICIES = ("linear", "step", "plateau", "cosine")
DIRECTIONS = ("AtoB", "BtoA")
CYCLE_GENERATORS = {"AtoB": "G_AB", "BtoA": "G_BA"}  # the CycleGAN generator that translates each way
AMP_DTYPES = ("auto", "bf16", "fp16")
KERNEL_CHOICES = ("auto", "torch", "triton")
LOADERS = ("auto", "torch", "dali", "gpu-cache")
