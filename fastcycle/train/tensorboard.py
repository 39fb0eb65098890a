"""TensorBoard logging of a run (--tensorboard): losses, lr, throughput and sample images.

Events go to `<run>/tensorboard`, so `tensorboard --logdir <run>` (or a folder of runs) shows them.
The `tensorboard` package is optional; without it, opening a sink is a UserError naming the fix.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fastcycle.errors import UserError

# the keys of a metrics line that are not losses; they are logged under train/, the losses under loss/
TRAIN_KEYS = frozenset({"epoch", "lr", "pairs_per_s", "mfu"})


class TensorBoardSink:
    """A SummaryWriter on `<run_dir>/tensorboard`. purge_step: on resume, the step the run restarts
    from; events an interrupted run logged at or after it are hidden, as metrics.jsonl drops them."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "--tensorboard needs the tensorboard package: "
                "pip install tensorboard (or fastcycle[tensorboard])"
            ) from None
        self.log_dir = Path(run_dir) / "tensorboard"
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log_scalars(self, step: int, scalars: dict) -> None:
        """Log each number in `scalars` (e.g. a metrics line) at `step`, then flush. A tag with a "/"
        is kept as it is; otherwise epoch/lr/pairs_per_s/mfu go under train/ and the rest under loss/.
        "step", non-numbers and non-finite values are left out."""
        for key, value in scalars.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            tag = key if "/" in key else f"{'train' if key in TRAIN_KEYS else 'loss'}/{key}"
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def log_image(self, tag: str, step: int, image: np.ndarray) -> None:
        """Log an (H, W, 3) or (H, W) uint8 image (e.g. a sample grid) at `step`."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or not (
            image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
        ):
            raise ValueError(
                f"log_image needs a uint8 (H, W, 3) or (H, W) array, got {image.dtype} {image.shape}"
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        self._writer.add_image(tag, image, global_step=step, dataformats="HWC" if image.ndim == 3 else "HW")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()  # SummaryWriter.close() may be called twice

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
