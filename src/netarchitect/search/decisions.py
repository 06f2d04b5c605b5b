"""The report's "why this model" section: an architecture decision record per Pareto model.

Two pieces of evidence, both read from the stored trials (nothing is re-evaluated):

- which search dimensions mattered: Optuna's fANOVA parameter importances per objective,
  over the fully trained trials (seeded, so a re-rendered report is identical);
- the trade-off each chosen model makes against its neighbours on the front: what the next
  cheaper model gives up in the quality metric and what the next better one costs more,
  and where their choices on the important dimensions differ.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial

from .objectives import Objective
from .pruning import fully_trained
from .scoring import Scoring

__all__ = ["MIN_TRIALS", "decision_records", "parameter_importances"]

MIN_TRIALS = 4
"""Fewest fully trained trials for which importances are estimated (fANOVA fits a forest)."""

TOP_DIMENSIONS = 3


def parameter_importances(
    trials: Sequence[FrozenTrial], objectives: Sequence[Objective], seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{objective name: {dimension: importance}}`` (each sums to 1, largest first).

    Only fully trained trials count; an objective whose values do not vary, or a search
    with fewer than :data:`MIN_TRIALS` trials, has no entry.
    """
    complete = [t for t in trials if fully_trained(t)]
    if len(complete) < MIN_TRIALS:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line
    try:
        study = optuna.create_study(directions=[o.direction for o in objectives])
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(complete)
    out: dict[str, dict[str, float]] = {}
    for i, objective in enumerate(objectives):
        values = [t.values[i] for t in complete]
        if max(values) == min(values):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API warnings
            found = get_param_importances(
                study,
                evaluator=FanovaImportanceEvaluator(seed=seed),
                target=lambda t, i=i: t.values[i],
                normalize=True,
            )
        found = {k: float(v) for k, v in found.items() if math.isfinite(v) and v > 0}
        if found:
            out[objective.name] = found
    return out


def _value(objective: Objective, value: float, scoring: Scoring) -> str:
    return scoring.format(value) if objective.name == "accuracy" else objective.format(value)


def _label(objective: Objective, scoring: Scoring) -> str:
    return f"validation {scoring.label}" if objective.name == "accuracy" else objective.label


def _choices(trial: FrozenTrial, dims: Sequence[str]) -> str:
    return ", ".join(f"`{d}`={_short(trial.params[d])}" for d in dims if d in trial.params)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _differences(trial: FrozenTrial, other: FrozenTrial, dims: Sequence[str]) -> str:
    changed = [
        f"`{d}` ({_short(trial.params[d])} vs {_short(other.params[d])})"
        for d in dims
        if d in trial.params and d in other.params and trial.params[d] != other.params[d]
    ]
    if not changed:
        return "the same choices on the dimensions that mattered"
    return "differs in " + ", ".join(changed)


def _comparison(
    trial: FrozenTrial,
    other: FrozenTrial,
    objectives: Sequence[Objective],
    scoring: Scoring,
    dims: Sequence[str],
    relation: str,
) -> str:
    """``Against trial 7 (the next cheaper ...): accuracy 98% vs 97%, MACs 2,000 vs 1,000 (2.00×); ...``"""
    parts = []
    for i, objective in enumerate(objectives):
        ours, theirs = trial.values[i], other.values[i]
        text = f"{_value(objective, ours, scoring)} vs {_value(objective, theirs, scoring)}"
        if objective.name != "accuracy" and theirs > 0:
            text += f" ({ours / theirs:.2f}×)"
        parts.append(f"{_label(objective, scoring)} {text}")
    return (f"Against trial {other.number} (the {relation} model on the front): "
            f"{', '.join(parts)}; {_differences(trial, other, dims)}.")


def decision_records(
    trials: Sequence[FrozenTrial],
    front: Sequence[FrozenTrial],
    objectives: Sequence[Objective],
    scoring: Scoring,
    seed: int = 0,
    final: dict[str, Any] | None = None,
) -> list[str]:
    """Markdown lines of the "why this model" section (``front`` ordered from cheapest);
    ``final`` (the chosen models' entries) adds how an interpretable model decides."""
    lines = ["## Why these models", ""]
    importances = parameter_importances(trials, objectives, seed)
    if importances:
        lines += [("Which search dimensions mattered (fANOVA importance over the "
                  f"{sum(fully_trained(t) for t in trials)} fully trained trials; each "
                  "column sums to 1):"), ""]
        names = list(importances)
        dims = sorted({d for imp in importances.values() for d in imp},
                      key=lambda d: -max(imp.get(d, 0.0) for imp in importances.values()))
        by_name = {o.name: o for o in objectives}
        header = ["dimension"] + [_label(by_name[n], scoring) for n in names]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for d in dims:
            cells = [f"{importances[n].get(d, 0.0):.2f}" for n in names]
            lines.append(f"| `{d}` | " + " | ".join(cells) + " |")
        lines.append("")
    else:
        lines += [(f"Too few fully trained trials (fewer than {MIN_TRIALS}, or no objective "
                  "varied) to estimate which search dimensions mattered."), ""]
    ranked = sorted({d for imp in importances.values() for d in imp},
                    key=lambda d: -sum(imp.get(d, 0.0) for imp in importances.values()))
    key_dims = ranked[:TOP_DIMENSIONS]
    for position, trial in enumerate(front):
        values = ", ".join(f"{_value(o, trial.values[i], scoring)} {_label(o, scoring)}"
                           for i, o in enumerate(objectives))
        lines += [f"### Trial {trial.number}: {values}", ""]
        if key_dims:
            lines.append(f"- Choices on the dimensions that mattered most: "
                         f"{_choices(trial, key_dims)}.")
        if position > 0:
            lines.append("- " + _comparison(trial, front[position - 1], objectives, scoring,
                                            key_dims, "next cheaper"))
        if position + 1 < len(front):
            lines.append("- " + _comparison(trial, front[position + 1], objectives, scoring,
                                            key_dims, "next costlier"))
        if len(front) == 1:
            lines.append("- The only model on the front: no other trained trial is at least as "
                         "good on every objective.")
        lines.append("")
        section = (final or {}).get(str(trial.number), {}).get("interpretability")
        if section:  # prototypes / concepts, one heading level down
            lines += [line.replace("### ", "#### ", 1) if line.startswith("### ") else line
                      for line in section.splitlines()] + [""]
    return lines
