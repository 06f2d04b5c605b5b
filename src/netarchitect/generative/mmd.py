"""Sample-quality metrics for low-dimensional samples: MMD with RBF kernels, and k-NN precision
and recall (Kynkäänniemi et al., 2019).

``mmd_rbf`` is the unbiased estimate of MMD² (Gretton et al., 2012) with a sum of Gaussian
kernels ``k(a, b) = Σ_h exp(-‖a-b‖² / (2h²))``; by default one bandwidth, the median pairwise
distance of the pooled samples (the median heuristic). The unbiased estimate can be slightly
negative when the distributions match.

k-NN precision: the fraction of generated samples inside the data manifold, i.e. within the
k-th-nearest-neighbour radius of some real sample; recall: the fraction of real samples within
the k-NN radius of some generated sample. ``mode_coverage`` counts mixture modes hit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import GenerativeError

__all__ = ["knn_precision_recall", "median_bandwidth", "mmd_rbf", "mode_coverage"]


def _dist(a: Tensor, b: Tensor) -> Tensor:
    """Exact pairwise Euclidean distances (no ``‖a‖² + ‖b‖² - 2ab`` cancellation)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _check_pair(x: Tensor, y: Tensor, min_n: int = 2) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise GenerativeError(
            f"x, y: need (n, d) and (m, d) samples, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] < min_n or y.shape[0] < min_n:
        raise GenerativeError(f"x, y: need at least {min_n} samples each")


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """The median pairwise distance of the pooled samples ``x ∪ y`` (off-diagonal)."""
    z = torch.cat([x, y]).double()
    d = _dist(z, z)
    off = d[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
    return float(off.median())


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: Sequence[float] | float | None = None) -> float:
    """Unbiased MMD² between samples ``x (n, d)`` and ``y (m, d)`` with an RBF kernel sum over
    ``bandwidths`` (default: the median heuristic). Computed in float64."""
    _check_pair(x, y)
    if bandwidths is None:
        bandwidths = [median_bandwidth(x, y)]
    elif isinstance(bandwidths, (int, float)):
        bandwidths = [float(bandwidths)]
    if not bandwidths or any(not h > 0 for h in bandwidths):
        raise GenerativeError(f"bandwidths: {list(bandwidths)!r} must be positive")
    x, y = x.double(), y.double()

    def k(a: Tensor, b: Tensor) -> Tensor:
        d2 = _dist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)  # type: ignore[return-value]

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def _knn_radius(a: Tensor, k: int) -> Tensor:
    d = _dist(a, a)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself at distance 0


def _covered(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    return (_dist(points, centres) <= radii[None, :]).any(1)


def knn_precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with ``k``-NN radii:
    precision = P(fake inside some real k-NN ball), recall = P(real inside some fake k-NN ball)."""
    _check_pair(real, fake, min_n=k + 1)
    if k < 1:
        raise GenerativeError(f"k: {k!r} is not a positive integer")
    real, fake = real.double(), fake.double()
    precision = _covered(fake, real, _knn_radius(real, k)).double().mean()
    recall = _covered(real, fake, _knn_radius(fake, k)).double().mean()
    return float(precision), float(recall)


def mode_coverage(
    samples: Tensor, centres: Tensor, std: float, *, n_sigma: float = 3.0, min_count: int = 1
) -> tuple[int, float]:
    """``(modes hit, fraction of samples within n_sigma·std of their nearest centre)``; a mode
    is hit when at least ``min_count`` samples lie within ``n_sigma·std`` of it."""
    if not std > 0:
        raise GenerativeError(f"std: {std!r} is not positive")
    d = _dist(samples.double(), centres.double())
    near, idx = d.min(1)
    good = near <= n_sigma * std
    counts = torch.bincount(idx[good], minlength=len(centres))
    return int((counts >= min_count).sum()), float(good.double().mean())
