"""Offline digits metrics: the data split, the judge, the Fréchet distance (against a hand
computation with scipy's sqrtm) and class coverage."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from netarchitect.generative.digits import (
    DigitsJudge,
    class_coverage,
    digits_fd,
    digits_images,
    feature_stats,
    frechet_distance,
)
from netarchitect.generative.errors import GenerativeError


@pytest.fixture(scope="module")
def judge() -> DigitsJudge:
    return DigitsJudge()


@pytest.fixture(scope="module")
def test16() -> torch.Tensor:
    return digits_images("test", 16)[0]


def test_digits_images_split() -> None:
    x, y = digits_images("train", 8)
    xt, yt = digits_images("test", 16)
    assert x.shape == (1437, 1, 8, 8) and xt.shape == (360, 1, 16, 16)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.bincount(yt, minlength=10).min() >= 35  # stratified: 35-37 per class
    again, _ = digits_images("train", 8)
    torch.testing.assert_close(again, x)
    again[0] = 5  # a copy: the cached split is untouched
    assert float(digits_images("train", 8)[0].max()) == 1.0
    other, _ = digits_images("train", 8, seed=1)
    assert not torch.equal(other, x)
    # 16x16 test digits are the 8x8 ones resized: the same labels in the same order
    torch.testing.assert_close(digits_images("test", 8)[1], yt)


@pytest.mark.parametrize(("kwargs", "match"), [({"split": "val"}, "split"),
                                               ({"size": 0}, "size"), ({"size": 8.0}, "size")])
def test_digits_images_refuses_bad_arguments(kwargs, match) -> None:
    with pytest.raises(GenerativeError, match=match):
        digits_images(**kwargs)


def _random_stats(d: int, seed: int, rank: int | None = None):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, rank or d))
    return rng.normal(size=d), a @ a.T / d


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    mu1, s1 = _random_stats(6, 0)
    mu2, s2 = _random_stats(6, 1)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # closed form for 1-D Gaussians: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]),
                            np.array([[9.0]])) == pytest.approx(4.0 + 1.0)


def test_frechet_distance_is_real_and_stable_for_singular_covariances() -> None:
    mu1, s1 = _random_stats(8, 2, rank=3)
    mu2, s2 = _random_stats(8, 3, rank=2)
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-7)


def test_statistics_errors() -> None:
    with pytest.raises(GenerativeError, match="features"):
        feature_stats(np.zeros((1, 3)))
    with pytest.raises(GenerativeError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    mu, sigma = feature_stats(torch.arange(12.0).reshape(4, 3))
    assert mu.shape == (3,) and sigma.shape == (3, 3)


def test_judge_is_accurate_cached_and_shapes(judge, test16) -> None:
    assert judge.accuracy() >= 0.95
    assert DigitsJudge().net is judge.net  # trained once per process
    assert judge.features(test16[:5]).shape == (5, 64)
    p = judge.predict_proba(digits_images("test", 8)[0][:5])  # any size is resized
    torch.testing.assert_close(p.sum(-1), torch.ones(5))
    assert "seed=0" in repr(judge)
    with pytest.raises(GenerativeError, match="images"):
        judge.features(torch.zeros(2, 3, 8, 8))


def test_digits_fd_of_real_digits_is_near_zero_and_of_noise_large(judge, test16) -> None:
    assert digits_fd(test16) == pytest.approx(0.0, abs=1e-6)
    assert digits_fd(digits_images("test", 8)[0]) == pytest.approx(0.0, abs=1e-6)
    real = digits_fd(digits_images("train", 16)[0], judge=judge)
    noise = digits_fd(torch.randn(500, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert real < 10 and noise > 30 * real
    # a tensor reference: the same as the split's name
    assert digits_fd(test16[:200], reference=test16) == pytest.approx(digits_fd(test16[:200]))
    with pytest.raises(GenerativeError, match="reference"):
        digits_fd(test16, reference="val")


def test_class_coverage_of_real_digits_and_noise(judge, test16) -> None:
    real = class_coverage(test16)
    assert real.classes == 10 and real.confident >= 0.8
    classes, _ = class_coverage(test16[digits_images("test", 16)[1] < 3], judge=judge)
    assert classes == 3
    noise = class_coverage(torch.randn(300, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert noise.confident < real.confident / 2
    for bad in (0.0, 1.5):
        with pytest.raises(GenerativeError, match="threshold"):
            class_coverage(test16, threshold=bad)
    with pytest.raises(GenerativeError, match="empty"):
        class_coverage(test16[:0])


def test_the_judge_trains_even_when_first_used_under_no_grad() -> None:
    from netarchitect.generative import digits

    with torch.no_grad():
        net = digits._trained(seed=1, epochs=1)  # a fresh (seed, epochs): trained here
    assert not any(p.requires_grad for p in net.parameters())
    digits._trained.cache_clear()
