"""Early stopping of poor trials; the fidelity is the training epoch.

**One objective** (accuracy): Optuna's ``MedianPruner`` (5 start-up trials, 3
warm-up epochs) on the validation accuracy reported each epoch.

**Several objectives** — Optuna has no pruner for them — our Pareto-dominance
rule. A running trial T has fixed costs ``c_T`` (params, MACs, latency: known
before training) and, at epoch ``t``, a best-so-far validation accuracy
``a_T(t)``. Each fully trained trial R contributes ``(a_R(t'), c_R)`` where
``a_R(t')`` is R's best-so-far accuracy at the same point of its schedule
(``t' + 1 = ceil((t + 1) · E_R / E_T)`` for planned epochs ``E_R`` and ``E_T``: the
same epoch when they are equal; its final best if it stopped earlier). T is
stopped at epoch ``t`` when

1. ``t + 1 >= max(warmup_steps, ceil(warmup_fraction · E_T))`` — by default
   3 epochs and 40 % of T's own planned epochs ``E_T``, because large networks
   start slowly and would otherwise be stopped behind small fast starters that
   they overtake later — and at least ``min_trials`` (default 4) trials have
   fully trained, and
2. T was dominated at ``patience`` (default 2) consecutive epochs, where
   "dominated at ``t``" means some R has ``c_R <= c_T`` component-wise and
   ``a_R(t') >= a_T(t) + margin`` (default margin 0.0075: three samples of the
   digits' 360-sample validation split), or, with ``margin = 0``, the plain
   Pareto dominance (``a_R(t') >= a_T(t)`` with at least one strict inequality).

Comparing at the same point of the learning-rate schedule compares like with
like (equal fidelity). The margin is there because trials that end on the
front often trail a cheaper (or equally cheap) trial by a sample or two in the
middle of training and overtake it when the learning rate anneals. Replayed
on six searches of the default space run without early stopping (426 trials,
30 of them on the final fronts; ``benchmarks/bench_search.py`` replays seeds
0-2), plain dominance would have stopped 9 of those 30, in every run; margins
of two and three samples stop 2 and 1 of them and still skip 27 % and 19 % of
all training epochs. The patience keeps one noisy epoch from stopping a trial.

A stopped multi-objective trial is recorded as COMPLETE with its best accuracy
so far and the user attribute ``stopped = "pruned"``: Optuna's NSGA-II counts
only COMPLETE trials towards a generation, so recording them as PRUNED would
starve its populations (and random sampling would go on); they are never
chosen for the Pareto front. (A single-objective trial
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
    "is_reused",
    "is_stopped",
    "make_pruner",
    "make_stopper",
    "references",
]

Stopper = Callable[[int, float], bool]


@dataclass(frozen=True)
class Reference:
    """A completed trial as the rule sees it: its accuracy curve, its (minimised) costs and its
    planned epochs (``None``: compare at the same epoch)."""

    curve: tuple[float, ...]
    costs: tuple[float, ...]
    epochs: int | None = None

    def best_at(self, step: int) -> float:
        """Best validation accuracy reached by epoch ``step`` (its final best if it ran fewer)."""
        return max(self.curve[: step + 1]) if self.curve else float("-inf")

    def aligned(self, step: int, epochs: int | None) -> int:
        """This trial's epoch at the same point of its schedule as epoch ``step`` of ``epochs``."""
        if not epochs or not self.epochs or epochs == self.epochs:
            return step
        return max(0, math.ceil((step + 1) * self.epochs / epochs) - 1)


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
        margin: float = 0.0075,
    ) -> None:
        self.refs, self.costs, self.epochs = list(refs), tuple(costs), epochs
        self.warmup_steps = max(warmup_steps, math.ceil(warmup_fraction * epochs) if epochs else 0)
        self.min_trials, self.patience, self.margin = min_trials, patience, margin
        self.best = float("-inf")
        self.streak = 0

    def dominated(self, step: int, acc: float) -> bool:
        """Whether a completed trial dominates (``acc``, costs) at epoch ``step`` (see above)."""
        for r in self.refs:
            a = r.best_at(r.aligned(step, self.epochs))
            pairs = list(zip(r.costs, self.costs, strict=True))
            if a - acc < self.margin or any(rc > c for rc, c in pairs):
                continue
            if a > acc or any(rc < c for rc, c in pairs):
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


def is_reused(trial: FrozenTrial) -> bool:
    """Whether the trial reused the result of an earlier trial of the same candidate."""
    return "reused_from" in trial.user_attrs


def is_stopped(trial: FrozenTrial) -> bool:
    """Whether the trial's training was stopped early (PRUNED, or kept as COMPLETE, see above)."""
    return not is_reused(trial) and (
        trial.state == TrialState.PRUNED or trial.user_attrs.get("stopped") == "pruned"
    )


def fully_trained(trial: FrozenTrial) -> bool:
    """A COMPLETE trial whose training ran to its end (the only candidates for the front)."""
    return (
        trial.state == TrialState.COMPLETE
        and trial.values is not None
        and not is_stopped(trial)
        and not is_reused(trial)
    )


def references(study: optuna.Study, objectives: Sequence[Objective]) -> list[Reference]:
    """Fully trained trials with a recorded curve, as :class:`Reference` s."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        curve = t.user_attrs.get("curve")
        if curve and fully_trained(t):
            epochs = (t.user_attrs.get("train") or {}).get("epochs")
            out.append(Reference(tuple(curve), _costs(t.values, objectives), epochs))
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
