"""Few-shot evaluation: accuracy per episode, mean and 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from netarchitect.meta.episodes import Episode
from netarchitect.meta.errors import FewShotError

__all__ = ["FewShotResult", "evaluate_episodes", "mean_ci95"]

#: ``classify(support_x, support_y, query_x, n_way) -> logits (n_query_total, n_way)``
Classifier = Callable[[Tensor, Tensor, Tensor, int], Tensor]


@dataclass(frozen=True)
class FewShotResult:
    """Mean accuracy over episodes with the half-width of its 95% confidence interval."""

    mean: float
    ci95: float
    accuracies: tuple[float, ...]

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}"


def mean_ci95(accuracies: Sequence[float]) -> tuple[float, float]:
    """``(mean, 1.96 * sample std / sqrt(n))``; the half-width is 0 for one value."""
    if len(accuracies) == 0:
        raise FewShotError("accuracies", "needs at least one value")
    n = len(accuracies)
    mean = sum(accuracies) / n
    if n == 1:
        return mean, 0.0
    var = sum((a - mean) ** 2 for a in accuracies) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def evaluate_episodes(classify: Classifier, episodes: Sequence[Episode]) -> FewShotResult:
    """Accuracy of ``classify`` on each episode's query set (under ``torch.no_grad``)."""
    accs = []
    for ep in episodes:
        with torch.no_grad():
            logits = classify(ep.support_x, ep.support_y, ep.query_x, ep.n_way)
        accs.append((logits.argmax(-1) == ep.query_y).float().mean().item())
    mean, ci = mean_ci95(accs)
    return FewShotResult(mean, ci, tuple(accs))
