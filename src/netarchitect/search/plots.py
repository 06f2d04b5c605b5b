"""Report figures (matplotlib's Agg canvas, no pyplot state): the Pareto front and the history."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from .._io import atomic_write
from .objectives import Objective
from .pruning import fully_trained, is_reused, is_stopped
from .scoring import SCORINGS, Scoring

__all__ = ["plot_history", "plot_pareto"]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    )


def _axis_label(scoring: Scoring) -> str:
    return f"validation {scoring.label}" + (" (%)" if scoring.percent else "")


def _cost(objectives: Sequence[Objective]) -> Objective:
    """The cost on the x axis: the first cost objective, else the parameter count."""
    return next(
        (o for o in objectives if o.name != "accuracy"),
        Objective("params", "minimize", "params", "parameters"),
    )


def plot_pareto(
    trials: Sequence[FrozenTrial],
    front: Sequence[FrozenTrial],
    objectives: Sequence[Objective],
    path: Path,
    scoring: Scoring = SCORINGS["classification"],
) -> Path:
    """Validation metric against the first cost: completed trials, the front as a step line."""
    cost = _cost(objectives)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    done = [t for t in trials if fully_trained(t) and cost.attr in t.user_attrs]
    pruned = [t for t in trials if is_stopped(t) and cost.attr in t.user_attrs]
    for group, style, label in (
        (done, {"c": "tab:blue", "alpha": 0.5}, "completed"),
        (pruned, {"c": "tab:gray", "marker": "x", "alpha": 0.5}, "stopped early"),
    ):
        if group:
            ax.scatter(
                [t.user_attrs[cost.attr] for t in group],
                [scoring.scale(t.user_attrs["val_acc"]) for t in group],
                s=18,
                label=label,
                **style,
            )
    pts = sorted(
        (t.user_attrs[cost.attr], scoring.scale(t.user_attrs["val_acc"]))
        for t in front
        if cost.attr in t.user_attrs
    )
    if pts:
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", c="tab:red", lw=1.5)
        ax.scatter(
            [p[0] for p in pts],
            [p[1] for p in pts],
            c="tab:red",
            s=36,
            label="Pareto front",
            zorder=3,
        )
    if pts and min(p[0] for p in pts) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(cost.label)
    ax.set_ylabel(_axis_label(scoring))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_history(
    trials: Sequence[FrozenTrial], path: Path, scoring: Scoring = SCORINGS["classification"]
) -> Path:
    """Validation metric of each trained trial by trial number, with the running best."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    trained = sorted(
        (t for t in trials if "val_acc" in t.user_attrs and not is_reused(t)),
        key=lambda t: t.number,
    )
    for stopped, c, label in (
        (False, "tab:blue", "completed"),
        (True, "tab:gray", "stopped early"),
    ):
        group = [t for t in trained if is_stopped(t) == stopped]
        if group:
            ax.scatter(
                [t.number for t in group],
                [scoring.scale(t.user_attrs["val_acc"]) for t in group],
                s=14,
                c=c,
                label=label,
            )
    best, xs, ys = -math.inf, [], []
    for t in trained:
        if fully_trained(t):
            best = max(best, t.user_attrs["val_acc"])
            xs.append(t.number)
            ys.append(scoring.scale(best))
    if xs:
        ax.step(xs, ys, where="post", c="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(_axis_label(scoring))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
