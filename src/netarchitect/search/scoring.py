"""How a task's outputs are trained and scored: loss, validation metric, and how both are shown.

``classification`` (cross-entropy, accuracy), ``regression`` (mean squared error, R²
averaged over the targets as scikit-learn's ``r2_score``) and ``multilabel`` (binary
cross-entropy on logits, macro-F1 at probability 0.5). Every metric is higher-is-better,
so the search's quality objective maximises it whatever the task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import NetArchitectError

__all__ = ["SCORINGS", "Scoring", "get_scoring"]


@dataclass(frozen=True)
class Scoring:
    """A loss ``(outputs, targets, label_smoothing) -> scalar`` and a metric over a whole split."""

    name: str
    label: str  # column and axis label: "accuracy", "R²", "macro-F1"
    percent: bool  # shown as a percentage
    loss: Callable[[Tensor, Tensor, float], Tensor]
    metric: Callable[[Tensor, Tensor], float]

    def format(self, value: float | None) -> str:
        """``97.22%`` for percentages, ``0.4812`` otherwise, ``–`` for a missing value."""
        if value is None:
            return "–"
        return f"{100 * value:.2f}%" if self.percent else f"{value:.4f}"

    def scale(self, value: float) -> float:
        """The value as plotted (percent where the metric is a percentage)."""
        return 100 * value if self.percent else value


def _cross_entropy(out: Tensor, y: Tensor, smoothing: float) -> Tensor:
    return F.cross_entropy(out, y, label_smoothing=smoothing)


def _accuracy(out: Tensor, y: Tensor) -> float:
    return int((out.argmax(1) == y).sum()) / len(y)  # exact: correct / total


def _mse(out: Tensor, y: Tensor, smoothing: float) -> Tensor:
    return F.mse_loss(out, y)


def _r2(out: Tensor, y: Tensor) -> float:
    """Coefficient of determination per target, averaged (a constant target scores 0 if missed,
    1 if matched, as scikit-learn's ``r2_score``)."""
    residual = ((y - out) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    perfect = residual == 0
    r2 = torch.where(total > 0, 1 - residual / total.clamp_min(1e-30), perfect.to(out.dtype))
    return float(r2.mean())


def _bce(out: Tensor, y: Tensor, smoothing: float) -> Tensor:
    target = y * (1 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(out, target)


def _macro_f1(out: Tensor, y: Tensor) -> float:
    """Per-label F1 of ``sigmoid(out) > 0.5``, averaged; a label never predicted nor present
    scores 0 (scikit-learn's ``zero_division=0``)."""
    pred = out > 0
    truth = y > 0.5
    tp = (pred & truth).sum(0).double()
    denom = pred.sum(0).double() + truth.sum(0).double()
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    return float(f1.mean())


SCORINGS = {
    "classification": Scoring("accuracy", "accuracy", True, _cross_entropy, _accuracy),
    "regression": Scoring("r2", "R²", False, _mse, _r2),
    "multilabel": Scoring("macro_f1", "macro-F1", True, _bce, _macro_f1),
}


def get_scoring(kind: str) -> Scoring:
    """The scoring of a task kind (``classification``, ``regression`` or ``multilabel``)."""
    try:
        return SCORINGS[kind]
    except KeyError:
        raise NetArchitectError(
            f"unknown task kind {kind!r}; use one of {', '.join(SCORINGS)}"
        ) from None
