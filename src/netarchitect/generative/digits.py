"""Offline sample-quality metrics on scikit-learn's digits: a small judge classifier trained
here (seeded, once per process), the Fréchet distance on its penultimate features
("digits-FD", FID's recipe with a digits network instead of Inception) and class coverage.

Images are ``(N, 1, S, S)`` in ``[-1, 1]`` (:func:`digits_images`); the judge resizes any
``S`` to its own 16×16 (bilinear, as the 16×16 digits themselves are made), so 8×8 and 16×16
samples are measured on one scale.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.attention import calling_thread_only
from .errors import GenerativeError

__all__ = [
    "Coverage",
    "DigitsJudge",
    "class_coverage",
    "digits_fd",
    "digits_images",
    "feature_stats",
    "frechet_distance",
]

SPLITS = ("train", "test")
#: Fraction of the 1,797 digits held out as the ``test`` split (stratified by class).
TEST_FRACTION = 0.2
#: The judge's input size; other sizes are resized to it.
JUDGE_SIZE = 16


@functools.cache
def _split(size: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.model_selection import train_test_split

    from ..meta.digits import load_digits_images

    x, y = load_digits_images(size)
    x = x * 2 - 1  # [0, 1] -> [-1, 1]
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=TEST_FRACTION, stratify=y.numpy(), random_state=seed
    )
    tr, te = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return x[tr], y[tr], x[te], y[te]


def digits_images(split: str = "train", size: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled digits as images in ``[-1, 1]`` ``(N, 1, size, size)`` (bilinear
    resize from 8×8) and int64 labels ``(N,)``: a fixed stratified split, seeded by ``seed``
    (``test``: 20%, 360 images; ``train``: 1,437)."""
    if split not in SPLITS:
        raise GenerativeError(f"split: {split!r} is not one of {SPLITS}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise GenerativeError(f"size: {size!r} is not a positive integer")
    x_tr, y_tr, x_te, y_te = _split(size, seed)
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return x.clone(), y.clone()


def _judge_net() -> nn.Sequential:
    """Two conv-pool stages and a 64-wide hidden layer (the features) before the logits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 8, 8)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 4, 4)
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(),  # features (B, 64)
        nn.Linear(64, 10),
    )


def _shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Random translation by up to one pixel (background -1 fills the gap)."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    return padded[:, :, 1 + dy : 1 + dy + x.shape[2], 1 + dx : 1 + dx + x.shape[3]]


@functools.cache
def _trained(seed: int, epochs: int) -> nn.Sequential:
    x, y = digits_images("train", JUDGE_SIZE, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _judge_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    # the first use may come from inside torch.no_grad() (evaluating samples)
    with calling_thread_only(), torch.enable_grad():  # too small for a parallel region per op
        _fit(net, opt, x, y, g, epochs)
    net.eval().requires_grad_(False)
    return net


def _fit(net: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
         g: torch.Generator, epochs: int) -> None:
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(net(_shift(x[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class DigitsJudge:
    """A small CNN trained on the ``train`` split of :func:`digits_images` (seeded, with
    ±1-pixel shifts; ~98% test accuracy), trained once per process per ``(seed, epochs)``
    and shared by every instance.

    ``features(x)``: the 64 penultimate activations; ``predict_proba(x)``: class
    probabilities. ``x``: ``(N, 1, S, S)`` in ``[-1, 1]``, any ``S`` (resized to 16).
    """

    def __init__(self, seed: int = 0, epochs: int = 15) -> None:
        self.seed, self.epochs = seed, epochs
        self.net = _trained(seed, epochs)

    def _prepare(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise GenerativeError(f"images: expected (N, 1, S, S), got {tuple(x.shape)}")
        x = x.detach().float().cpu()
        if x.shape[-2:] != (JUDGE_SIZE, JUDGE_SIZE):
            x = F.interpolate(x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear",
                              align_corners=False)
        return x

    def _run(self, x: Tensor, upto: int | None) -> Tensor:
        x = self._prepare(x)
        layers = self.net[:upto] if upto is not None else self.net
        with torch.no_grad():
            return torch.cat([layers(chunk) for chunk in x.split(512)])

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(N, 64)``."""
        return self._run(x, -1)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities ``(N, 10)``."""
        return self._run(x, None).softmax(-1)

    def accuracy(self, split: str = "test") -> float:
        """Accuracy on a split of the digits."""
        x, y = digits_images(split, JUDGE_SIZE)
        return float((self.predict_proba(x).argmax(-1) == y).float().mean())

    def __repr__(self) -> str:
        return f"DigitsJudge(seed={self.seed}, epochs={self.epochs})"


def feature_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``(N, D)`` features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise GenerativeError(f"features: need (N >= 2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """``‖μ₁ - μ₂‖² + tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^½)`` between two Gaussians (Dowson & Landau).

    ``tr (Σ₁ Σ₂)^½`` is computed as ``Σ √λ_i`` of the symmetric PSD matrix
    ``Σ₁^½ Σ₂ Σ₁^½`` (same eigenvalues as ``Σ₁ Σ₂``) by ``eigh``: real and stable even for
    singular covariances, where ``scipy.linalg.sqrtm`` can return complex noise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise GenerativeError(
            f"statistics: shapes differ: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}"
        )
    r1 = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt, 0.0))


@functools.cache
def _reference_stats(seed: int, epochs: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, _ = digits_images(split, JUDGE_SIZE)
    return feature_stats(DigitsJudge(seed, epochs).features(x))


def digits_fd(samples: Tensor, *, reference: str | Tensor = "test",
              judge: DigitsJudge | None = None) -> float:
    """digits-FD: Fréchet distance between the judge's features of ``samples``
    ``(N, 1, S, S)`` in ``[-1, 1]`` and of ``reference`` (a split name, default the held-out
    ``test`` digits, or images). Lower is better; 0 for identical feature statistics."""
    judge = judge or DigitsJudge()
    if isinstance(reference, str):
        if reference not in SPLITS:
            raise GenerativeError(f"reference: {reference!r} is not one of {SPLITS} or images")
        ref = _reference_stats(judge.seed, judge.epochs, reference)
    else:
        ref = feature_stats(judge.features(reference))
    return frechet_distance(*feature_stats(judge.features(samples)), *ref)


class Coverage(NamedTuple):
    """Classes among the confident predictions, and the fraction of confident samples."""

    classes: int
    confident: float


def class_coverage(samples: Tensor, threshold: float = 0.9,
                   judge: DigitsJudge | None = None) -> Coverage:
    """How many of the 10 digit classes the judge recognises with probability ``>=
    threshold`` in ``samples``, and the fraction of samples that confident."""
    if not 0.0 < threshold <= 1.0:
        raise GenerativeError(f"threshold: {threshold!r} is not in (0, 1]")
    if len(samples) == 0:
        raise GenerativeError("samples: empty")
    conf, pred = (judge or DigitsJudge()).predict_proba(samples).max(-1)
    sure = conf >= threshold
    return Coverage(int(pred[sure].unique().numel()), float(sure.float().mean()))
