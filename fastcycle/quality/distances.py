"""FID and KID between two sets of Inception features, in float64.

FID (Heusel et al. 2017): |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2), S the covariance
(n - 1 in the denominator, as every FID library has it). The last trace is taken without forming the
square root of a product: with any factors S_a = F_a^T F_a and S_b = F_b^T F_b, tr((S_a S_b)^1/2) is the
sum of the singular values of F_a F_b^T (the nuclear norm). The factor is the centred features / sqrt(n -
1) when there are no more images than features, so a set of fewer than 2048 images (a singular
covariance) needs no matrix square root at all, and its FID against itself is zero up to rounding
(scipy's sqrtm of a singular product is where other libraries lose digits and add eps to the diagonal);
with more images it is S^1/2 from a symmetric eigendecomposition (rounding's negative eigenvalues set
to zero).

KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets, with its standard deviation; subsets are drawn
exactly as torch-fidelity draws them (numpy RandomState(seed), `choice` without replacement, fake
then real), so its numbers and fastcycle's are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020  # torch-fidelity's default: the same subsets, so the same KID
_FULL_KERNEL_MAX = 4096  # up to this many images per set the kernels are computed once, then indexed


@dataclass(frozen=True)
class Stats:
    """A feature set's mean, a factor F of its covariance (S = F^T F) and tr(S)."""

    mu: np.ndarray
    factor: np.ndarray
    trace: float
    n: int


def statistics(features: np.ndarray) -> Stats:
    x = np.asarray(features, np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {n}")
    mu = x.mean(0)
    xc = (x - mu) / np.sqrt(n - 1)
    if n <= d:
        factor = xc
    else:
        w, v = np.linalg.eigh(xc.T @ xc)
        factor = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return Stats(mu, factor, float(np.einsum("ij,ij->", xc, xc)), n)


def fid(a: Stats, b: Stats) -> float:
    cross = np.linalg.svd(a.factor @ b.factor.T, compute_uv=False).sum()
    diff = a.mu - b.mu
    return float(diff @ diff + a.trace + b.trace - 2 * cross)


def _mmd2(kxx: np.ndarray, kxy: np.ndarray, kyy: np.ndarray) -> float:
    """The unbiased estimate: the diagonals of k(x, x) and k(y, y) left out."""
    m = kxx.shape[0]
    within = kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)
    return float(within / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(
    fake: np.ndarray,
    real: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = KID_SEED,
) -> tuple[float, float, int]:
    """(mean, standard deviation, subset size): subsets of min(subset_size, either set's size)."""
    x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(x)} and {len(y)}")
    rng = np.random.RandomState(seed)
    full = max(len(x), len(y)) <= _FULL_KERNEL_MAX  # each subset indexes three matrices made once
    if full:
        kxx, kxy, kyy = _kernel(x, x), _kernel(x, y), _kernel(y, y)
    values = np.empty(subsets)
    for s in range(subsets):
        i = rng.choice(len(x), size, replace=False)
        j = rng.choice(len(y), size, replace=False)
        if full:
            values[s] = _mmd2(kxx[np.ix_(i, i)], kxy[np.ix_(i, j)], kyy[np.ix_(j, j)])
        else:
            values[s] = _mmd2(_kernel(x[i], x[i]), _kernel(x[i], y[j]), _kernel(y[j], y[j]))
    return float(values.mean()), float(values.std()), size


@dataclass(frozen=True)
class Quality:
    """FID and KID of one set of generated images against the real images of the target domain."""

    fid: float
    kid: float
    kid_std: float
    kid_subset_size: int
    n_fake: int
    n_real: int

    def line(self, label: str) -> str:
        return (
            f"{label}: FID {self.fid:.3f} | KID {self.kid * 1e3:.3f} +- {self.kid_std * 1e3:.3f} x 1e-3 | "
            f"{self.n_fake} vs {self.n_real} images"
        )

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def compare(
    fake: np.ndarray,
    real: np.ndarray,
    real_stats: Stats | None = None,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
) -> Quality:
    """FID and KID of feature sets (N, 2048); real_stats: the real set's, when already at hand."""
    k, k_std, size = kid(fake, real, subsets, subset_size)
    f = fid(statistics(fake), real_stats or statistics(real))
    return Quality(f, k, k_std, size, len(fake), len(real))
