"""Search objectives, Pareto dominance and hypervolume.

``accuracy`` (validation accuracy, maximised) is the quality objective every
search needs; ``params``, ``macs`` and ``latency`` (ms, batch 1) are costs to
minimise. One objective runs TPE; several run NSGA-II (or any sampler by name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from ..errors import NetArchitectError
from ..registry import suggest
from .seeding import TrialSeededSampler

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "Objective",
    "dominates",
    "hypervolume",
    "make_sampler",
    "pareto_front",
    "parse_objectives",
    "resolve_sampler",
]


@dataclass(frozen=True)
class Objective:
    """A search objective: its name, Optuna direction and the trial attribute holding its value."""

    name: str
    direction: str
    attr: str
    label: str

    @property
    def sign(self) -> float:
        """+1 to minimise, -1 to maximise (multiply to get a minimisation value)."""
        return 1.0 if self.direction == "minimize" else -1.0

    def format(self, value: float) -> str:
        if self.name == "accuracy":
            return f"{100 * value:.2f}%"
        if self.name == "latency":
            return f"{value:.3g} ms"
        return f"{int(value):,}"


OBJECTIVES = {
    "accuracy": Objective("accuracy", "maximize", "val_acc", "validation accuracy"),
    "params": Objective("params", "minimize", "params", "parameters"),
    "macs": Objective("macs", "minimize", "macs", "MACs per sample"),
    "latency": Objective("latency", "minimize", "latency_ms", "latency (ms, batch 1)"),
}
SAMPLERS = ("auto", "tpe", "nsga2", "random")


def parse_objectives(value: str | Sequence[str]) -> list[Objective]:
    """``"accuracy,macs"`` (or a list) -> objectives; accuracy is required, names are unique."""
    names = [
        n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()
    ]
    out: list[Objective] = []
    for name in names:
        if name not in OBJECTIVES:
            raise NetArchitectError(
                f"--objectives: unknown objective {name!r}{suggest(name, list(OBJECTIVES))}; "
                f"use {', '.join(OBJECTIVES)}"
            )
        if OBJECTIVES[name] in out:
            raise NetArchitectError(f"--objectives: {name!r} is listed twice")
        out.append(OBJECTIVES[name])
    if OBJECTIVES["accuracy"] not in out:
        raise NetArchitectError("--objectives must include accuracy (e.g. accuracy,macs)")
    return out


def _minimised(
    points: Sequence[Sequence[float]], directions: Sequence[str]
) -> list[tuple[float, ...]]:
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    return [tuple(s * v for s, v in zip(signs, p, strict=True)) for p in points]


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    (ma, mb) = _minimised([a, b], directions)
    return all(x <= y for x, y in zip(ma, mb, strict=True)) and any(
        x < y for x, y in zip(ma, mb, strict=True)
    )


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (duplicates keep their first occurrence)."""
    out: list[int] = []
    for i, p in enumerate(points):
        if any(dominates(q, p, directions) for q in points):
            continue
        if any(tuple(points[j]) == tuple(p) for j in out):
            continue
        out.append(i)
    return out


def _hv_min(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume dominated by minimisation ``points`` up to ``ref`` (slicing on the last axis)."""
    points = [p for p in points if all(x < r for x, r in zip(p, ref, strict=True))]
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    points.sort(key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(points):
        upper = points[i + 1][-1] if i + 1 < len(points) else ref[-1]
        if upper > p[-1]:
            volume += (upper - p[-1]) * _hv_min([q[:-1] for q in points[: i + 1]], ref[:-1])
    return volume


def hypervolume(
    points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]
) -> float:
    """Exact hypervolume of ``points`` with respect to ``reference`` (a worst-case point)."""
    return _hv_min(_minimised(points, directions), _minimised([reference], directions)[0])


def resolve_sampler(name: str, n_objectives: int) -> str:
    """The sampler ``auto`` stands for: TPE for one objective, NSGA-II for several."""
    if name not in SAMPLERS:
        raise NetArchitectError(
            f"--sampler: unknown sampler {name!r}{suggest(name, list(SAMPLERS))}"
        )
    if name == "auto":
        return "tpe" if n_objectives == 1 else "nsga2"
    return name


def make_sampler(
    name: str, n_objectives: int, *, seed: int, trials: int
) -> optuna.samplers.BaseSampler:
    """``auto`` is TPE for one objective and NSGA-II for several; ``random`` is the baseline.

    Each trial draws from its own stream, seeded from ``(seed, trial number)``
    (:class:`~.seeding.TrialSeededSampler`): resumed runs and concurrent workers never
    replay each other's draws.
    """
    name = resolve_sampler(name, n_objectives)
    if name == "random":
        return TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    if name == "tpe":
        startup = min(10, max(3, trials // 5))
        return TrialSeededSampler(
            lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=startup), seed
        )
    population = max(8, min(24, trials // 4))
    return TrialSeededSampler(
        lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=population), seed
    )
