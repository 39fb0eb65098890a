"""The CycleGAN training step and loop."""

from fastcycle.train.loop import TrainResult, train
from fastcycle.train.step import CycleGAN

__all__ = ["CycleGAN", "TrainResult", "train"]
