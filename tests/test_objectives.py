"""Losses, the image pool and the LR policy against their definitions."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fastcycle.losses import gan_loss, l1
from fastcycle.pool import ImagePool
from fastcycle.train.schedule import linear_factor, linear_scheduler


def test_lsgan_and_vanilla_against_definitions():
    p = torch.randn(2, 1, 5, 5)
    assert torch.allclose(gan_loss(p, True, "lsgan"), ((p - 1) ** 2).mean())
    assert torch.allclose(gan_loss(p, False, "lsgan"), (p**2).mean())
    sig = torch.sigmoid(p)
    assert torch.allclose(gan_loss(p, True, "vanilla"), -torch.log(sig).mean(), atol=1e-6)
    assert torch.allclose(gan_loss(p, False, "vanilla"), -torch.log(1 - sig).mean(), atol=1e-6)
    x, y = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    assert torch.allclose(l1(x, y), F.l1_loss(x, y))


def test_losses_are_fp32_under_bf16_inputs():
    p = torch.randn(1, 1, 30, 30).bfloat16()
    assert gan_loss(p, True, "lsgan").dtype == torch.float32
    assert l1(p, p).dtype == torch.float32


def test_pool_fills_then_mixes_half_and_half():
    pool = ImagePool(pool_size=4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: every image is returned as is
    seen_new = seen_old = 0
    for step in range(400):
        before = set(pool.images.flatten().tolist())
        new = torch.full((1, 1, 1, 1), 100.0 + step)
        out = pool.query(new).item()
        after = set(pool.images.flatten().tolist())
        if out == 100.0 + step:
            seen_new += 1
            assert after == before  # returned as is, pool unchanged
        else:
            assert out in before and after == before - {out} | {100.0 + step}  # swapped with an old fake
            seen_old += 1
    # Binomial(400, 1/2): 4.5 sigma either side is 155..245; a broken coin fails this.
    assert 155 <= seen_new <= 245 and seen_new + seen_old == 400


def test_pool_size_zero_passes_through():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = ImagePool(0, seed=0).query(x)
    # The same images, detached: D's loss must not reach back into G's graph.
    assert torch.equal(y, x) and y.data_ptr() == x.data_ptr() and not y.requires_grad


def test_pool_state_round_trip_continues_identically():
    torch.manual_seed(0)
    stream = [torch.randn(2, 3, 4, 4) for _ in range(30)]
    a = ImagePool(5, seed=3)
    for x in stream[:10]:
        a.query(x)
    b = ImagePool(5, seed=99)
    b.load_state_dict(a.state_dict(), torch.device("cpu"))
    for x in stream[10:]:
        assert torch.equal(a.query(x), b.query(x))


@pytest.mark.parametrize(("n_epochs", "n_decay"), [(100, 100), (3, 5)])
def test_linear_policy(n_epochs, n_decay):
    factors = [linear_factor(e, n_epochs, n_decay) for e in range(n_epochs + n_decay)]
    assert factors[:n_epochs] == [1.0] * n_epochs
    decay = factors[n_epochs:]
    assert all(b < a for a, b in itertools.pairwise(decay))
    steps = [a - b for a, b in zip(factors[n_epochs - 1 :], decay, strict=False)]
    assert all(math.isclose(s, 1 / (n_decay + 1)) for s in steps)  # linear
    assert math.isclose(decay[-1], 1 / (n_decay + 1))  # one more step would reach 0


def test_scheduler_drives_the_optimizer():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2e-4)
    sched = linear_scheduler(opt, 2, 3)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2e-4, 2e-4, 1.5e-4, 1e-4, 0.5e-4])


def test_gradient_penalty_takes_low_precision_fakes_under_autocast():
    """Under --amp the fakes are bf16 and the reals fp32; the interpolates are fp32 either way."""
    from fastcycle.losses import gradient_penalty

    D = torch.nn.Conv2d(3, 1, 3)
    real, fake = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(D, real, fake)
    gp.backward()
    assert gp.dtype == torch.float32 and torch.isfinite(gp) and D.weight.grad.abs().sum() > 0
