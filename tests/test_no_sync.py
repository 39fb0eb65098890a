"""No host-device synchronisation inside a training step: every family's `train_step` runs under a dispatch
mode that fails on each op that makes the host wait for the device.

On a CPU nothing actually waits, but the ops are the same ones that stall a GPU, so a CPU run catches a
sync before a GPU ever sees it. What a dispatch mode cannot see: host reads that bypass the dispatcher
(`.tolist()` and `.numpy()` of CPU tensors; a GPU test in test_gpu.py runs the step under CUDA's own
sync detector for those) and the ops inside fastcycle's custom kernels' host code (the mode is paused
while an op it passed on runs; that code allocates and launches, it reads nothing back).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastcycle.config import apply_overrides
from fastcycle.presets import dcgan, pix2pix
from fastcycle.train import CycleGAN
from fastcycle.train.dcgan import DCGAN
from fastcycle.train.pix2pix import Pix2Pix
from tests.conftest import DEVICE
from tests.test_train import _batch, model_env, tiny

aten = torch.ops.aten

# Each blocked op, with why the host must wait for the device to run it.
SYNCING = {
    # .item(), float(t), int(t), bool(t), `if t:` and Python comparisons all end here.
    aten._local_scalar_dense.default: "reads a tensor's value on the host",
    aten.is_nonzero.default: "truth value of a tensor (`if t:`)",
    aten.equal.default: "torch.equal returns a Python bool",
    aten.allclose.default: "torch.allclose returns a Python bool",
    # Output sizes that depend on the data: the host must read the data to allocate the result.
    aten.nonzero.default: "output size depends on the data",
    aten.masked_select.default: "output size depends on the data",
    aten._unique2.default: "output size depends on the data",
    aten.unique_consecutive.default: "output size depends on the data",
    aten.unique_dim.default: "output size depends on the data",
    aten.bincount.default: "output size depends on the largest value",
    aten.repeat_interleave.Tensor: "output size depends on the repeats",
}
# Boolean-mask indexing (t[mask], t[mask] = v) turns the mask into indices with nonzero inside the op.
MASK_INDEXED = {
    aten.index.Tensor,
    aten.index_put.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
}
COPIES = {aten._to_copy.default, aten.copy_.default}


def _is_mask(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


class NoSync(TorchDispatchMode):
    """Fails on any op that reads a device value back to the host (see SYNCING and the checks below)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = SYNCING.get(func)
        if func in MASK_INDEXED and any(_is_mask(i) for i in args[1] if i is not None):
            reason = "boolean-mask indexing (nonzero inside)"
        if func in COPIES and _device_to_host(func, args, kwargs):
            reason = "copies a device tensor to the host"
        if reason is not None:
            raise AssertionError(f"host-device sync in the step: {func} ({reason})")
        return func(*args, **kwargs)


def _device_to_host(func, args, kwargs) -> bool:
    src = args[1] if func is aten.copy_.default else args[0]
    dst = args[0].device if func is aten.copy_.default else kwargs.get("device", src.device)
    return src.device.type != "cpu" and torch.device(dst).type == "cpu"


# A mode that missed what it is for would pass every step: each kind of read-back must fail under it.
READS = {
    "item": lambda t: t.sum().item(),
    "if": lambda t: bool(t.sum() > 0),
    "equal": lambda t: torch.equal(t, t),
    "nonzero": lambda t: torch.nonzero(t),
    "mask": lambda t: t[t > 1],
    "mask assign": lambda t: t.clone().__setitem__(t > 1, 0.0),
    "masked_select": lambda t: t.masked_select(t > 1),
    "unique": lambda t: torch.unique(t),
    "to host": lambda t: t.to("cpu") if t.is_cuda else t.sum().item(),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_the_mode_catches_each_kind_of_sync(read):
    t = torch.arange(4.0, device=DEVICE)
    with pytest.raises(AssertionError, match="host-device sync"), NoSync():
        read(t)
    with NoSync():  # while the step's own idioms pass
        torch.where(t > 1, t, 0.0).nan_to_num().sum()


def _steps(model, *inputs, n: int = 2) -> None:
    """n steps under NoSync: the first one also creates the optimizers' state and fills the pools."""
    with NoSync():
        for _ in range(n):
            losses, _ = model.train_step(*inputs)
    assert all(torch.isfinite(v) for v in losses.values())  # read after the mode: the test's own sync


@pytest.mark.parametrize(
    "overrides,amp_dtype",
    [
        ({"pool_size": 2}, "auto"),  # fp32, identity loss, pools that fill in step 1 and draw in step 2
        ({"gan_mode": "wgangp", "lambda_identity": 0.0}, "bf16"),  # gradient penalty, bf16 autocast
        ({}, "fp16"),  # the GradScaler's unscale, inf check and update
    ],
    ids=["fp32", "wgangp-bf16", "fp16-scaler"],
)
def test_cyclegan_step_has_no_sync(overrides, amp_dtype):
    model = CycleGAN(tiny(**overrides), model_env(DEVICE, amp_dtype=amp_dtype))
    _steps(model, *(t.to(DEVICE) for t in _batch()))


def test_cyclegan_step_with_fused_kernels_has_no_sync():
    model = CycleGAN(tiny(crop_size=16, load_size=16), model_env(DEVICE, kernels="triton"))
    _steps(model, *(t.to(DEVICE) for t in _batch(size=16)), n=1)


def test_pix2pix_and_dcgan_steps_have_no_sync():
    small = {"ngf": 4, "ndf": 4, "batch_size": 2}
    p2p = Pix2Pix(apply_overrides(pix2pix(), {**small, "netG": "unet_128"}), model_env(DEVICE))
    _steps(p2p, *(torch.rand(2, 3, 128, 128, device=DEVICE) * 2 - 1 for _ in range(2)))
    gan = DCGAN(apply_overrides(dcgan(), small), model_env(DEVICE))
    _steps(gan, torch.rand(2, 3, 64, 64, device=DEVICE) * 2 - 1)
