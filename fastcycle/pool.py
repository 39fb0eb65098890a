"""The image history buffer of Shrivastava et al. 2017, with the reference's `ImagePool` semantics.

Discriminators see, for each new fake, with probability 1/2 the fake itself and otherwise a random
older fake (which the new one replaces), once the pool holds `pool_size` images.
"""

from __future__ import annotations

import random

import torch


class ImagePool:
    def __init__(self, pool_size: int, seed: int):
        self.pool_size = pool_size
        self.num_imgs = 0
        self.images: torch.Tensor | None = None  # (pool_size, C, H, W), on the fakes' device
        # The accept/replace decisions are drawn on the host from a private generator: no device
        # sync, and the pool's randomness is saved and restored with the checkpoint.
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch like `images` (N, C, H, W) drawn from new and pooled fakes; updates the pool."""
        images = images.detach()  # D's loss must not reach back into G's (already freed) graph
        if self.pool_size == 0:
            return images
        if self.images is None:
            self.images = images.new_empty((self.pool_size, *images.shape[1:]))
        out = []
        for image in images:
            if self.num_imgs < self.pool_size:
                self.images[self.num_imgs].copy_(image)
                self.num_imgs += 1
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                k = self.rng.randint(0, self.pool_size - 1)
                out.append(self.images[k].clone())
                self.images[k].copy_(image)
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        images = None if self.images is None else self.images[: self.num_imgs].clone()
        return {
            "pool_size": self.pool_size,
            "num_imgs": self.num_imgs,
            "images": images,
            "rng": self.rng.getstate(),
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.num_imgs = state["num_imgs"]
        if state["images"] is not None:
            images = state["images"].to(device)
            self.images = images.new_empty((self.pool_size, *images.shape[1:]))
            self.images[: self.num_imgs].copy_(images)
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
