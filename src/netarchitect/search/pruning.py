"""Early stopping of poor trials; the fidelity is the training epoch.

**One objective** (accuracy): Optuna's ``MedianPruner`` (5 start-up trials, 3
warm-up epochs) on the validation accuracy reported each epoch.

**Several objectives** — Optuna has no pruner for them — our Pareto-dominance
rule. A running trial T has fixed costs ``c_T`` (params, MACs, latency: known
before training) and, at epoch ``t``, a best-so-far validation accuracy
``a_T(t)``. Each completed trial R contributes ``(a_R(t), c_R)`` where
``a_R(t)`` is R's best-so-far accuracy at the same epoch (its final best if it
stopped earlier). T is stopped at epoch ``t`` when

1. ``t + 1 >= max(warmup_steps, ceil(warmup_fraction · E_T))`` — by default
   3 epochs and 40 % of T's own planned epochs ``E_T``, because large networks
   start slowly and would otherwise be stopped behind small fast starters that
   they overtake later — and at least ``min_trials`` (default 4) trials have
   fully trained, and
2. T was dominated at ``patience`` (default 2) consecutive epochs, where
   "dominated at ``t``" means some R has ``a_R(t) >= a_T(t)`` and ``c_R <= c_T``
   component-wise, with at least one strict inequality.

Comparing at the same epoch compares like with like (equal fidelity); the
patience keeps one noisy epoch from stopping a trial. A stopped multi-objective
trial is recorded as COMPLETE with its best accuracy so far and the user
attribute ``stopped = "pruned"``: Optuna's NSGA-II counts only COMPLETE trials
towards a generation, so recording them as PRUNED would starve its populations
(and random sampling would go on); their values are dominated by the trial that
stopped them, so they never enter the Pareto front. (A single-objective trial
stopped by the pruner is PRUNED, as TPE expects.) :func:`fully_trained` tells
them apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from .objectives import Objective

__all__ = [
    "ParetoStopRule",
    "Reference",
    "fully_trained",
    "is_stopped",
    "make_pruner",
    "make_stopper",
    "references",
]

Stopper = Callable[[int, float], bool]


@dataclass(frozen=True)
class Reference:
    """A completed trial as the rule sees it: its accuracy curve and its (minimised) costs."""

    curve: tuple[float, ...]
    costs: tuple[float, ...]

    def best_at(self, step: int) -> float:
        """Best validation accuracy reached by epoch ``step`` (its final best if it ran fewer)."""
        return max(self.curve[: step + 1]) if self.curve else float("-inf")


class ParetoStopRule:
    """The multi-objective early-stopping rule of this module; call it once per epoch."""

    def __init__(
        self,
        refs: Sequence[Reference],
        costs: Sequence[float],
        *,
        epochs: int | None = None,
        warmup_steps: int = 3,
        warmup_fraction: float = 0.4,
        min_trials: int = 4,
        patience: int = 2,
    ) -> None:
        self.refs, self.costs = list(refs), tuple(costs)
        self.warmup_steps = max(warmup_steps, math.ceil(warmup_fraction * epochs) if epochs else 0)
        self.min_trials, self.patience = min_trials, patience
        self.best = float("-inf")
        self.streak = 0

    def dominated(self, step: int, acc: float) -> bool:
        """Whether a completed trial dominates (``acc``, costs) at epoch ``step``."""
        for r in self.refs:
            a = r.best_at(step)
            no_worse = a >= acc and all(rc <= c for rc, c in zip(r.costs, self.costs, strict=True))
            if no_worse and (
                a > acc or any(rc < c for rc, c in zip(r.costs, self.costs, strict=True))
            ):
                return True
        return False

    def __call__(self, step: int, acc: float) -> bool:
        self.best = max(self.best, acc)
        if len(self.refs) < self.min_trials or step + 1 < self.warmup_steps:
            return False
        self.streak = self.streak + 1 if self.dominated(step, self.best) else 0
        return self.streak >= self.patience


def _costs(values: Sequence[float], objectives: Sequence[Objective]) -> tuple[float, ...]:
    return tuple(
        o.sign * v for o, v in zip(objectives, values, strict=True) if o.name != "accuracy"
    )


def is_stopped(trial: FrozenTrial) -> bool:
    """Whether the trial's training was stopped early (PRUNED, or kept as COMPLETE, see above)."""
    return trial.state == TrialState.PRUNED or trial.user_attrs.get("stopped") == "pruned"


def fully_trained(trial: FrozenTrial) -> bool:
    """A COMPLETE trial whose training ran to its end (the only candidates for the front)."""
    return trial.state == TrialState.COMPLETE and trial.values is not None and not is_stopped(trial)


def references(study: optuna.Study, objectives: Sequence[Objective]) -> list[Reference]:
    """Completed trials with a recorded curve, as :class:`Reference` s."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        curve = t.user_attrs.get("curve")
        if curve and fully_trained(t):
            out.append(Reference(tuple(curve), _costs(t.values, objectives)))
    return out


def make_pruner(enabled: bool) -> optuna.pruners.BasePruner:
    """The single-objective pruner (``NopPruner`` when disabled)."""
    if not enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)


def make_stopper(
    trial: optuna.Trial,
    objectives: Sequence[Objective],
    costs: dict[str, float],
    enabled: bool,
    epochs: int | None = None,
) -> Stopper | None:
    """The per-epoch stop test for ``trial``: Optuna's pruner or the Pareto rule (``None`` if off).

    ``costs`` maps each cost objective's name to this trial's (already measured) value;
    ``epochs`` is the trial's planned number of epochs.
    """
    if not enabled:
        return None
    if len(objectives) == 1:

        def single(step: int, acc: float) -> bool:
            trial.report(acc, step)
            return trial.should_prune()

        return single
    mine = tuple(o.sign * costs[o.name] for o in objectives if o.name != "accuracy")
    return ParetoStopRule(references(trial.study, objectives), mine, epochs=epochs)
