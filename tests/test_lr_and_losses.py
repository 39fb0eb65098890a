"""The LR policies against their reference definitions, the GAN objectives' options (label smoothing,
WGAN-GP and its gradient penalty, the class loss), and the config checks of the newer options."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastcycle.config import OptimConfig, apply_overrides, validate
from fastcycle.errors import UserError
from fastcycle.losses import class_loss, gan_loss, gradient_penalty
from fastcycle.presets import cyclegan, dcgan, pix2pix
from fastcycle.train import train
from fastcycle.train.schedule import build_scheduler, step_scheduler
from tests.test_train import tiny

LR = 2e-4


def _lrs(n: int, **optim) -> list[float]:
    """The lr of each of n epochs under build_scheduler, stepped once per epoch as the loop does."""
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=LR)
    sched = build_scheduler(opt, OptimConfig(lr=LR, **optim))
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        step_scheduler(sched, None)
    return lrs


@pytest.mark.parametrize("epoch_count", [1, 5])
@pytest.mark.parametrize(("n_epochs", "n_decay"), [(6, 4), (3, 7)])
def test_linear_policy_is_the_reference_formula(epoch_count, n_epochs, n_decay):
    n_run = n_epochs + n_decay - epoch_count + 1  # the epochs a run started at epoch_count trains
    got = _lrs(n_run, lr_policy="linear", n_epochs=n_epochs, n_epochs_decay=n_decay, epoch_count=epoch_count)
    # The reference's lambda_rule, where `e` counts the scheduler's own steps from 0.
    want = [LR * (1 - max(0, e + epoch_count - n_epochs) / (n_decay + 1)) for e in range(n_run)]
    # Same closed form computed by LambdaLR: only float rounding of lr x factor differs.
    assert got == pytest.approx(want, rel=1e-12, abs=1e-18)
    assert got[-1] == pytest.approx(LR / (n_decay + 1), rel=1e-12)  # the last epoch: one step above 0


def test_step_policy_divides_by_ten_every_lr_decay_iters():
    got = _lrs(10, lr_policy="step", lr_decay_iters=3, n_epochs=10, n_epochs_decay=0)
    want = [LR * 0.1 ** (e // 3) for e in range(10)]
    assert got == pytest.approx(want, rel=1e-12)  # float rounding of 0.1**k only
    assert got[2] == LR and got[3] == pytest.approx(LR / 10, rel=1e-12)


def test_cosine_policy_matches_torch_cosine_annealing():
    n_epochs = 12
    got = _lrs(n_epochs + 1, lr_policy="cosine", n_epochs=n_epochs, n_epochs_decay=0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs, eta_min=0)
    want = []
    for _ in range(n_epochs + 1):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    # torch's scheduler updates recursively, ours in closed form: they agree to accumulated rounding.
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert (
        got[0] == LR
        and got[n_epochs // 2] == pytest.approx(LR / 2)
        and got[-1] == pytest.approx(0, abs=1e-15)
    )


def _plateau(metrics: list[float]) -> list[float]:
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=LR)
    sched = build_scheduler(opt, OptimConfig(lr=LR, lr_policy="plateau"))
    lrs = []
    for m in metrics:
        opt.step()
        step_scheduler(sched, m)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_plateau_policy_cuts_after_patience_and_not_while_improving():
    # A constant metric: the first epoch sets the best, the next 5 are within patience, the 7th cuts.
    flat = _plateau([1.0] * 8)
    assert flat[:6] == [LR] * 6
    assert flat[6] == pytest.approx(0.2 * LR, rel=1e-12)  # the x0.2 factor, float rounding only
    # 0.1% better per epoch stays within the 1% threshold for 7 epochs: a plateau all the same.
    assert _plateau([0.999**e for e in range(7)])[5:] == [LR, pytest.approx(0.2 * LR, rel=1e-12)]
    # 5% better every epoch beats the 1% threshold: never cut.
    assert _plateau([0.95**e for e in range(20)]) == [LR] * 20


def test_epoch_count_trains_the_remaining_epochs_only(dataset, tmp_path):
    cfg = tiny(data=str(dataset), out=str(tmp_path / "run"), n_epochs=2, n_epochs_decay=2, epoch_count=3)
    result = train(cfg)
    per_epoch = 6 // 2  # 6 A images (the larger domain) at batch 2
    assert result.step == 2 * per_epoch  # epochs 3 and 4 of 4, not all 4
    epochs = [r["epoch"] for r in result.losses]
    assert epochs == [2] * per_epoch + [3] * per_epoch  # 0-based: the first logged epoch is index 2
    # linear: epoch index 2 of 2 + 2 runs at 1 - 1/3, index 3 at 1 - 2/3 (float rounding only).
    assert result.losses[0]["lr"] == pytest.approx(LR * 2 / 3, rel=1e-9)
    assert result.losses[-1]["lr"] == pytest.approx(LR / 3, rel=1e-9)


# --- GAN objectives ------------------------------------------------------------------------------------


def test_lsgan_real_targets_are_drawn_within_the_smoothing_range():
    lo, hi = 0.7, 1.2
    torch.manual_seed(0)
    # One logit at 0 per call: the loss is t^2 for that call's target t.
    targets = [math.sqrt(gan_loss(torch.zeros(1), True, "lsgan", (lo, hi)).item()) for _ in range(400)]
    # fp32 sqrt of a fp32 square: within 1e-6 of the drawn value.
    assert all(lo - 1e-6 <= t <= hi + 1e-6 for t in targets)
    assert min(targets) < lo + 0.05 and max(targets) > hi - 0.05  # drawn over the range, not a constant
    # Over many logits at 0 the loss is E[t^2] for t ~ U[lo, hi].
    big = gan_loss(torch.zeros(1_000_000), True, "lsgan", (lo, hi)).item()
    expected = (hi**3 - lo**3) / (3 * (hi - lo))
    # The mean of 1e6 draws of t^2 (std ~0.3) is within ~3e-4 of E[t^2] (10 sigma here); 1% is loose.
    assert big == pytest.approx(expected, rel=1e-2)
    plain = gan_loss(torch.zeros(1_000_000), True, "lsgan").item()
    assert plain == 1.0  # no smoothing: every target is exactly 1


def test_a_single_smoothing_value_is_a_constant_target_and_fakes_keep_zero():
    torch.manual_seed(0)
    p = torch.randn(4, 1, 6, 6)
    # Same elementwise math on the same tensor, evaluated in another order: fp32 rounding only.
    assert gan_loss(p, True, "lsgan", (0.9, 0.9)).item() == pytest.approx(
        (p - 0.9).square().mean().item(), 1e-6
    )
    target = torch.full_like(p, 0.9)
    want = F.binary_cross_entropy_with_logits(p, target)
    assert gan_loss(p, True, "vanilla", (0.9, 0.9)).item() == pytest.approx(want.item(), rel=1e-6)
    for mode, fake in (
        ("lsgan", p.square().mean()),
        ("vanilla", F.binary_cross_entropy_with_logits(p, 0 * p)),
    ):
        assert gan_loss(p, False, mode, (0.7, 1.2)).item() == pytest.approx(fake.item(), rel=1e-6), mode


def test_wgangp_loss_is_the_critic_score():
    p = torch.randn(3, 1, 5, 5)
    assert gan_loss(p, True, "wgangp").item() == pytest.approx(-p.mean().item(), rel=1e-6)  # fp32 mean
    assert gan_loss(p, False, "wgangp").item() == pytest.approx(p.mean().item(), rel=1e-6)
    assert gan_loss(p, True, "wgangp", (0.7, 1.2)).item() == pytest.approx(-p.mean().item(), rel=1e-6)


def test_gradient_penalty_of_a_linear_critic_is_exact_and_reaches_its_weights():
    torch.manual_seed(0)
    w = (torch.randn(3, 4, 4) * 0.2).requires_grad_(True)

    def critic(x):
        return (w * x).flatten(1).sum(1)  # D(x) = <w, x>: grad_x D = w for every image

    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    norm = w.detach().norm()
    assert norm.item() != pytest.approx(1.0, abs=0.1)  # a penalty far from 0, so the test can fail
    # fp32 norms of 48 values (plus the 1e-16 eps under the sqrt): rel 1e-5.
    assert gp.item() == pytest.approx(((norm - 1) ** 2).item(), rel=1e-5)
    gp.backward()  # a double backward: the penalty's gradient goes through grad_x D to w
    want = 2 * (norm - 1) * w.detach() / norm
    torch.testing.assert_close(w.grad, want, rtol=1e-5, atol=1e-7)  # fp32 rounding of the same formula


def test_class_loss_is_cross_entropy_on_labelled_rows_only():
    torch.manual_seed(0)
    logits = torch.randn(8, 3, requires_grad=True)
    labels = torch.tensor([0, -1, 2, 1, -1, -1, 2, 0])
    keep = labels >= 0
    # sum/count vs torch's mean of the same per-row terms: fp32 rounding only.
    torch.testing.assert_close(class_loss(logits, labels), F.cross_entropy(logits[keep], labels[keep]))
    none = class_loss(logits, torch.full((8,), -1))
    assert none.item() == 0.0 and torch.isfinite(none)
    none.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))  # no NaN reaches the weights either


# --- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        (dcgan, {"netG": "resnet_9blocks"}, "--model dcgan goes with --netG dcgan --netD dcgan"),
        (cyclegan, {"netG": "unet_256", "load_size": 143, "crop_size": 128}, "multiple of 256"),
        (cyclegan, {"label_smoothing": "abc"}, "--label-smoothing 'abc' is not"),
        (cyclegan, {"label_smoothing": "1.2,0.7"}, r"--label-smoothing '1\.2,0\.7' is not"),
        (cyclegan, {"epoch_count": 0}, "--epoch-count 0 must be between 1 and"),
        (cyclegan, {"epoch_count": 201}, r"--epoch-count 201 must be between 1 and .* \(200\)"),
        (pix2pix, {"aux_classifier": True}, "--aux-classifier is for --model cycle_gan"),
    ],
)
def test_bad_family_options_are_refused(preset, overrides, message):
    with pytest.raises(UserError, match=message):
        validate(apply_overrides(preset(), overrides))


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        (dcgan, {"data": "faces"}),
        (cyclegan, {"netG": "unet_256", "load_size": 286, "crop_size": 256}),
        (cyclegan, {"label_smoothing": "0.9"}),
        (cyclegan, {"label_smoothing": "0.7,1.2"}),
        (cyclegan, {"epoch_count": 200}),
        (cyclegan, {"aux_classifier": True, "labels_A": "a.csv"}),
    ],
)
def test_the_valid_neighbours_of_those_are_accepted(preset, overrides):
    cfg = apply_overrides(preset(), overrides)
    before = cfg.to_dict()
    assert validate(cfg) is cfg and cfg.to_dict() == before  # returned for chaining, nothing changed
    fields = {name: value for section in before.values() for name, value in section.items()}
    assert {name: fields[name] for name in overrides} == overrides  # the neighbour is what was accepted
