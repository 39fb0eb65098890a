"""Training: the loop (loop.py) and the model families it trains (CycleGAN, pix2pix, DCGAN)."""

from fastcycle.train.cyclegan import CycleGAN
from fastcycle.train.loop import TrainResult, train

__all__ = ["CycleGAN", "TrainResult", "train"]
