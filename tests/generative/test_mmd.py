"""MMD (unbiased, RBF), k-NN precision/recall, mode coverage, and the 2-D toy data sets."""

from __future__ import annotations

import math

import pytest
import torch

from netarchitect.generative import (
    GenerativeError,
    gaussian_ring,
    knn_precision_recall,
    median_bandwidth,
    mmd_rbf,
    mode_coverage,
    ring_modes,
    swiss_roll,
)


def _mmd_reference(x: torch.Tensor, y: torch.Tensor, h: float) -> float:
    """Gretton et al. (2012), eq. 3, with explicit loops."""
    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_mmd_matches_the_reference_formula() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2, generator=g, dtype=torch.float64)
    y = torch.randn(5, 2, generator=g, dtype=torch.float64) + 1
    assert mmd_rbf(x, y, 0.8) == pytest.approx(_mmd_reference(x, y, 0.8), rel=1e-10)
    both = _mmd_reference(x, y, 0.5) + _mmd_reference(x, y, 2.0)
    assert mmd_rbf(x, y, [0.5, 2.0]) == pytest.approx(both, rel=1e-10)
    h = median_bandwidth(x, y)
    assert mmd_rbf(x, y) == pytest.approx(_mmd_reference(x, y, h), rel=1e-10)


def test_mmd_separates_distributions() -> None:
    a, b = gaussian_ring(800, seed=0)[0], gaussian_ring(800, seed=1)[0]
    same, other = mmd_rbf(a, b), mmd_rbf(a, torch.randn(800, 2))
    assert abs(same) < 1e-3 and other > 0.02


def test_median_bandwidth() -> None:
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert median_bandwidth(x, y) == pytest.approx(5.0)


def test_knn_precision_recall() -> None:
    real = gaussian_ring(1000, seed=0)[0]
    p, r = knn_precision_recall(real, gaussian_ring(1000, seed=1)[0])
    assert p > 0.9 and r > 0.9
    # half the modes: precise, but recall about one half
    pts, k = gaussian_ring(2000, seed=2)
    p, r = knn_precision_recall(real, pts[k < 4][:1000])
    assert p > 0.9 and 0.4 < r < 0.6
    # broad noise: covers everything (recall high), mostly off the data (precision low)
    p, r = knn_precision_recall(real, 3 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)))
    assert p < 0.3


def test_mode_coverage() -> None:
    centres = ring_modes(8, 2.0)
    pts, k = gaussian_ring(1000, std=0.02, seed=0)
    hit, frac = mode_coverage(pts, centres, 0.02)
    assert hit == 8 and frac > 0.98
    hit, frac = mode_coverage(pts[k != 3], centres, 0.02)
    assert hit == 7
    hit, frac = mode_coverage(torch.zeros(10, 2), centres, 0.02)
    assert (hit, frac) == (0, 0.0)
    assert mode_coverage(pts, centres, 0.02, min_count=1000)[0] == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mmd_rbf(torch.zeros(5, 2), torch.zeros(5, 3)), "x, y: need"),
        (lambda: mmd_rbf(torch.zeros(1, 2), torch.zeros(5, 2)), "at least 2"),
        (lambda: mmd_rbf(torch.zeros(5, 2), torch.ones(5, 2), 0.0), "bandwidths"),
        (lambda: mmd_rbf(torch.zeros(5, 2), torch.ones(5, 2), []), "bandwidths"),
        (lambda: knn_precision_recall(torch.zeros(3, 2), torch.zeros(3, 2)), "at least 4"),
        (lambda: knn_precision_recall(torch.zeros(9, 2), torch.zeros(9, 2), k=0), "k: 0"),
        (lambda: mode_coverage(torch.zeros(3, 2), ring_modes(), 0.0), "std"),
        (lambda: swiss_roll(0), "n: 0"),
        (lambda: swiss_roll(5, noise=-1.0), "noise"),
        (lambda: gaussian_ring(5, modes=0), "modes: 0"),
        (lambda: gaussian_ring(5, radius=0.0), "radius"),
        (lambda: gaussian_ring(5, std=0.0), "std"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(GenerativeError, match=match):
        call()


def test_toy_data_sets_are_seeded_and_shaped() -> None:
    a = swiss_roll(300, seed=4)
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.equal(a, swiss_roll(300, seed=4)) and not torch.equal(a, swiss_roll(300, seed=5))
    g = torch.Generator().manual_seed(4)
    assert torch.equal(swiss_roll(300, generator=g), a)
    assert 0.4 < float(a.std()) < 1.0  # scale 0.1: roughly unit spread
    radii = swiss_roll(2000, noise=0.0).norm(dim=1)
    assert 0.1 * 1.5 * math.pi - 1e-5 <= float(radii.min()) and float(radii.max()) <= 0.1 * 4.5 * math.pi + 1e-5
    pts, k = gaussian_ring(4000, modes=6, radius=3.0, std=0.1, seed=0)
    assert pts.shape == (4000, 2) and k.dtype == torch.int64 and set(k.tolist()) == set(range(6))
    centres = ring_modes(6, 3.0)
    torch.testing.assert_close(centres.norm(dim=1), torch.full((6,), 3.0))
    err = pts - centres[k]
    assert float(err.std()) == pytest.approx(0.1, rel=0.05)
