"""Define-by-run expansion of a search space into the concrete nodes of one candidate.

Every dimension is sampled through a trial (``optuna.Trial``, ``FixedTrial`` or
anything with the same ``suggest_*`` methods) under its path in the space, so a
dimension inside an option that is not chosen is never sampled. Inside a
:class:`~.dimensions.Repeat`, node ids get the repetition's suffix, ``$in`` names
the repetition's input, and afterwards a body id (or the repeat's ``id``) names
the last copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .dimensions import Choice, FloatRange, IntRange, Repeat

__all__ = ["Expander", "FirstTrial", "TrialLike", "body_ids"]


class TrialLike(Protocol):
    """The part of ``optuna.Trial`` (or ``FixedTrial``) that sampling uses."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class FirstTrial:
    """Samples every dimension at its first option / low end (used to probe a space)."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return low

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return choices[0]


class _Scope:
    """Id renaming inside one repetition of a :class:`Repeat` (or the top level)."""

    def __init__(self, parent: _Scope | None, suffix: str, input_id: str | None) -> None:
        self.parent, self.suffix, self.input_id = parent, suffix, input_id
        self.local: dict[str, str] = {}

    def full_suffix(self) -> str:
        return (self.parent.full_suffix() if self.parent else "") + self.suffix

    def resolve(self, name: str) -> str:
        if name == "$in" and self.input_id is not None:
            return self.input_id
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.local:
                return scope.local[name]
            scope = scope.parent
        return name


class Expander:
    """Turns a space's ``nodes`` into concrete node dicts for one trial."""

    def __init__(
        self, trial: TrialLike, variables: Mapping[str, Any], previous: str | None
    ) -> None:
        self.trial, self.variables = trial, variables
        self.nodes: list[dict[str, Any]] = []
        self.previous = previous
        self.scope = _Scope(None, "", previous)

    def value(self, raw: Any, path: str) -> Any:
        """Sample every dimension inside a value."""
        if isinstance(raw, IntRange):
            return self.trial.suggest_int(path, raw.low, raw.high, step=raw.step, log=raw.log)
        if isinstance(raw, FloatRange):
            return self.trial.suggest_float(path, raw.low, raw.high, log=raw.log)
        if isinstance(raw, Choice):
            v = self.trial.suggest_categorical(path, raw.values)
            return self.value(raw.options[v], f"{path}.options[{v}]") if raw.by_index else v
        if isinstance(raw, Mapping):
            return {k: self.value(v, f"{path}.{k}") for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(raw)]
        if isinstance(raw, str) and raw.startswith("$") and raw[1:] in self.variables:
            return self.variables[raw[1:]]
        return raw

    def elements(self, raw: list[Any], path: str) -> None:
        for i, element in enumerate(raw):
            self.element(element, f"{path}[{i}]")

    def element(self, raw: Any, path: str) -> None:
        if isinstance(raw, Choice):
            index = self.trial.suggest_categorical(path, raw.values)
            index = index if raw.by_index else raw.options.index(index)
            option = raw.options[index]
            if isinstance(option, list):
                self.elements(option, f"{path}.options[{index}]")
            elif option is not None:
                self.element(option, f"{path}.options[{index}]")
        elif isinstance(raw, Repeat):
            self.repeat(raw, path)
        else:
            self.node(self.value(raw, path))
        if getattr(raw, "id", None) and self.previous is not None:
            self.scope.local[raw.id] = self.previous

    def repeat(self, raw: Repeat, path: str) -> None:
        times = self.value(raw.times, f"{path}.times")
        outer, ids, last = self.scope, body_ids(raw.body), self.scope
        for r in range(times):
            self.scope = _Scope(outer, f"_{r}", self.previous)
            self.elements(list(raw.body), f"{path}.body")
            last = self.scope
            self.scope = outer
        for node_id in ids:
            outer.local[node_id] = last.resolve(node_id) if times else (self.previous or node_id)

    def node(self, node: Any) -> None:
        if not isinstance(node, Mapping):
            self.nodes.append(node)  # load_spec reports the problem with its path
            return
        node = dict(node)
        scope = self.scope
        if "inputs" in node:
            inputs = node["inputs"] if isinstance(node["inputs"], list) else [node["inputs"]]
            node["inputs"] = [scope.resolve(s) if isinstance(s, str) else s for s in inputs]
        elif self.previous is not None:
            node["inputs"] = [self.previous]
        if isinstance(node.get("id"), str) and scope.parent is not None:
            new_id = node["id"] + scope.full_suffix()
            scope.local[node["id"]] = new_id
            node["id"] = new_id
        self.nodes.append(node)
        self.previous = node.get("id") if isinstance(node.get("id"), str) else None


def body_ids(elements: Any) -> list[str]:
    """Every node id that ``elements`` (nodes, choices, repeats) can create."""
    out: list[str] = []
    for e in elements if isinstance(elements, list | tuple) else [elements]:
        if isinstance(e, Choice):
            for o in e.options:
                out += body_ids(o) if o is not None else []
        elif isinstance(e, Repeat):
            out += body_ids(list(e.body))
        elif isinstance(e, Mapping) and isinstance(e.get("id"), str):
            out.append(e["id"])
    return out
