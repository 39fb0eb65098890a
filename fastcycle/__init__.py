"""fastcycle: fast CycleGAN training and inference."""

__version__ = "0.1.0"
