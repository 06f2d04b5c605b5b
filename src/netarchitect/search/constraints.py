"""Cheap constraints, checked before any training.

Parameters, MACs and activation memory are measured on the ``meta`` device (no
weights allocated) for one sample; latency — only when a latency budget or
objective asks for it — on a short real run (batch 1, one thread, median of a
few forward passes). The cheapest measurements run first and the first
violated constraint rejects the candidate. :func:`find_feasible` probes a space
before a study is created, so an empty feasible region is a clear
:class:`BudgetError` after a bounded number of attempts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import optuna
import torch

from ..errors import BudgetError, SpecError
from ..network import build
from ..spec import NetworkSpec

__all__ = [
    "Budget",
    "Measurement",
    "Rejected",
    "Violation",
    "check",
    "check_classifier",
    "find_feasible",
    "measure",
]


@dataclass(frozen=True)
class Budget:
    """Upper limits on a candidate (``None``: unlimited); memory: activations per sample."""

    max_params: int | None = None
    max_macs: int | None = None
    max_activation_bytes: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise BudgetError(f"{f.name.replace('_', '-')} must be a number, got {value!r}")
            if value <= 0:
                raise BudgetError(
                    f"{f.name.replace('_', '-')} must be > 0, got {value!r}: no network fits"
                )

    def limits(self) -> dict[str, float]:
        """The set limits by measurement name (``params``, ``macs``, ``activation_bytes``, ...)."""
        return {
            f.name[4:]: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    def describe(self) -> str:
        parts = [f"{name} ≤ {limit:,}" for name, limit in self.limits().items()]
        return ", ".join(parts) or "unlimited"


@dataclass
class Measurement:
    """What a candidate costs; ``latency_ms`` is ``None`` until measured."""

    params: int
    macs: int | None = None
    activation_bytes: int | None = None
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Violation:
    """A constraint a candidate breaks: which measurement, its value and the limit."""

    name: str
    value: float
    limit: float

    def __str__(self) -> str:
        fmt = "{:,.3g}" if self.name == "latency_ms" else "{:,}"
        return f"{self.name} {fmt.format(self.value)} > {fmt.format(self.limit)}"


class Rejected(Exception):
    """Raised inside a trial for a candidate rejected without training."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


#: Keyword inputs of a representative call (a task's ``cost_inputs()``); ``None``: one sample.
CostInputs = Mapping[str, Any] | None


def _probe(spec: NetworkSpec, inputs: CostInputs = None) -> tuple[torch.nn.Module, Any]:
    """The model and inputs costs are measured on: one sample on ``meta``, or a real build
    on the task's representative inputs (graph structure needs real indices)."""
    if inputs is not None:
        return build(spec, seed=0).eval(), dict(inputs)
    model = build(spec, device="meta").eval()
    shape = spec.inputs[0].shape
    return model, torch.empty((1, *shape), device="meta")


def measure(
    spec: NetworkSpec, *, activation: bool = False, inputs: CostInputs = None
) -> Measurement:
    """Parameters and MACs (and activation bytes if asked) of one sample on ``meta``, or of a
    call on ``inputs``."""
    m, _ = _measure_until(spec, Budget(), activation=activation, inputs=inputs)
    return m


def _measure_until(
    spec: NetworkSpec, budget: Budget, *, activation: bool, inputs: CostInputs = None
) -> tuple[Measurement, Violation | None]:
    """Measure cheapest first, stopping at the first violated limit (later fields stay unset)."""
    from ..analysis import count_flops, count_params, memory

    model, x = _probe(spec, inputs)
    m = Measurement(count_params(model, by_module=False).total)
    steps = (
        ("macs", lambda: count_flops(model, x).macs),
        ("activation_bytes", (lambda: memory(model, x).activations) if activation else None),
    )
    for name, compute in (("params", None), *steps):
        if compute is not None:
            setattr(m, name, compute())
        limit = getattr(budget, f"max_{name}")
        value = getattr(m, name)
        if limit is not None and value is not None and value > limit:
            return m, Violation(name, value, limit)
    return m, None


def measure_latency(
    spec: NetworkSpec, *, seed: int = 0, repeats: int = 5, inputs: CostInputs = None
) -> float:
    """Median forward latency in ms of a real build on one thread, at batch 1 (or on
    ``inputs``)."""
    from ..analysis import latency

    model = build(spec, seed=seed).eval()
    x: Any = dict(inputs) if inputs is not None else torch.zeros((1, *spec.inputs[0].shape))
    return latency(model, x, warmup=2, repeats=repeats, threads=1, backward=False).forward.median_ms


def check_classifier(
    spec: NetworkSpec, num_classes: int, *, what: str = "a classifier of {n} classes"
) -> None:
    """A :class:`SpecError` unless ``spec`` has one output of per-sample shape
    ``(num_classes,)`` (inferred on ``meta``): what the trainer's loss needs. ``what`` names
    the model in the message (``{n}`` is ``num_classes``)."""
    from ..network import infer_shapes

    if len(spec.outputs) != 1:
        raise SpecError(
            f"outputs: a classifier has one output, got {list(spec.outputs)}", path="outputs"
        )
    shape = tuple(infer_shapes(spec)[spec.outputs[0]])
    if shape != (num_classes,):
        raise SpecError(
            f"outputs: the network outputs per-sample shape {list(shape)} for inputs "
            f"{list(spec.inputs[0].shape)}; {what.format(n=num_classes)} must output "
            f"[{num_classes}] (flatten or pool the input first)",
            path="outputs",
        )


def check(
    budget: Budget, spec: NetworkSpec, *, need_latency: bool = False, inputs: CostInputs = None
) -> tuple[Measurement, Violation | None]:
    """Measure ``spec`` cheapest-first and return the first violated constraint (or ``None``).

    Parameters, then MACs, then activation memory (only with a memory limit) on
    ``meta``; latency — a real run — only when the budget limits it or
    ``need_latency`` (a latency objective), and only after the rest passed.
    A rejected candidate's later measurements are left unset. ``inputs`` (a task's
    representative call) replaces the one-sample probe.
    """
    activation = budget.max_activation_bytes is not None
    m, v = _measure_until(spec, budget, activation=activation, inputs=inputs)
    if v is not None:
        return m, v
    if need_latency or budget.max_latency_ms is not None:
        m.latency_ms = measure_latency(spec, inputs=inputs)
        if budget.max_latency_ms is not None and m.latency_ms > budget.max_latency_ms:
            return m, Violation("latency_ms", m.latency_ms, budget.max_latency_ms)
    return m, None


def find_feasible(
    space: Any, budget: Budget, *, attempts: int = 60, seed: int = 0, inputs: CostInputs = None
) -> Measurement:
    """Sample ``space`` at random until a candidate meets ``budget``; returns its measurement.

    Raises :class:`BudgetError` after ``attempts`` infeasible or invalid
    candidates, naming how often each constraint was violated and the smallest
    value seen, so the user knows which limit to relax.
    """
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    violated: Counter[str] = Counter()
    smallest: dict[str, float] = {}
    invalid: list[str] = []
    for _ in range(attempts):
        trial = study.ask()
        try:
            spec = space.sample(trial)
            m, v = check(budget, spec, inputs=inputs)
        except SpecError as exc:  # a combination of choices that does not fit together
            invalid.append(str(exc).splitlines()[0])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if v is None:
            return m
        violated[v.name] += 1
        smallest[v.name] = min(smallest.get(v.name, math.inf), v.value)
    if not violated:
        raise BudgetError(
            f"no valid candidate in {attempts} samples of the search space; e.g. {invalid[0]}"
        )
    parts = [
        f"{name} exceeded its limit in {n} (smallest seen {smallest[name]:,.6g})"
        for name, n in violated.most_common()
    ]
    raise BudgetError(
        f"no candidate meets the budget ({budget.describe()}) after {attempts} attempts: "
        + "; ".join(parts)
    )
