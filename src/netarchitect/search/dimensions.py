"""Searchable values: :class:`Choice`, :class:`IntRange`, :class:`FloatRange`, :class:`Repeat`.

A search space is a spec in which any value may be one of these. They are
written three ways, all equivalent:

* Python objects: ``Choice([16, 32])``, ``IntRange(1, 3)``, ``FloatRange(1e-4, 1e-2, log=True)``,
  ``Repeat([...nodes...], IntRange(1, 3))``;
* YAML tags: ``!choice [16, 32]``, ``!int [1, 3]`` or ``!int {low: 1, high: 9, step: 2}``,
  ``!float {low: 1e-4, high: 1e-2, log: true}``, ``!repeat {body: [...], times: !int [1, 3]}``;
* plain dicts (JSON): ``{$choice: [16, 32]}``, ``{$int: [1, 3], step: 1}``,
  ``{$float: [1e-4, 1e-2], log: true}``, ``{$repeat: [...], times: {$int: [1, 3]}}``.

A choice or a repeat placed in a ``nodes`` list may carry an ``id``: later nodes
(and ``outputs``) can name it to mean "the last node this element produced".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Problem

__all__ = ["Choice", "FloatRange", "IntRange", "Repeat", "SpaceLoader", "parse_dimensions"]

_SCALARS = (type(None), bool, int, float, str)


@dataclass(frozen=True, eq=False)
class Choice:
    """One of ``options``; in a ``nodes`` list an option is a node, a list of nodes or ``None``."""

    options: tuple[Any, ...]
    id: str | None = None

    def __init__(self, options: Any, id: str | None = None) -> None:
        object.__setattr__(
            self, "options", tuple(options) if isinstance(options, list | tuple) else options
        )
        object.__setattr__(self, "id", id)

    @property
    def by_index(self) -> bool:
        """Whether Optuna sees option indices (some option is not a scalar) or the options."""
        return not all(isinstance(o, _SCALARS) for o in self.options)

    @property
    def values(self) -> list[Any]:
        """What Optuna samples: the options themselves when all are scalars, else their indices."""
        return list(range(len(self.options))) if self.by_index else list(self.options)

    def describe(self) -> str:
        shown = [
            o if isinstance(o, _SCALARS) else f"<option {i}>" for i, o in enumerate(self.options)
        ]
        return f"choice {shown}"


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` (both included) on a grid of ``step``; ``log``: log-uniform."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"int {self.low}..{self.high}{step}{' log' if self.log else ''}"


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``; ``log`` samples log-uniformly."""

    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"float {self.low:g}..{self.high:g}{' log' if self.log else ''}"


@dataclass(frozen=True, eq=False)
class Repeat:
    """``body`` (a node or a list of nodes) repeated ``times`` times (an int or an int dimension).

    Node ids in repetition ``r`` get the suffix ``_r``; inside the body ``$in`` names the
    repetition's input and body ids name the same repetition's nodes; after the repeat a
    body id names its last copy. All repetitions share the body's sampled values.
    """

    body: tuple[Any, ...]
    times: Any = field(default_factory=lambda: IntRange(1, 2))
    id: str | None = None

    def __init__(self, body: Any, times: Any = None, id: str | None = None) -> None:
        body = list(body) if isinstance(body, list | tuple) else [body]
        object.__setattr__(self, "body", tuple(body))
        object.__setattr__(self, "times", IntRange(1, 2) if times is None else times)
        object.__setattr__(self, "id", id)


Dim = Choice | IntRange | FloatRange


# --------------------------------------------------------------------------- YAML tags


class SpaceLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that understands ``!choice``, ``!int``, ``!float`` and ``!repeat``.

    It also reads YAML 1.2 floats such as ``1e-4`` (YAML 1.1 would make them strings).
    """


SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _tag_constructor(key: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.SequenceNode):
            return {key: loader.construct_sequence(node, deep=True)}
        if isinstance(node, yaml.MappingNode):
            body = loader.construct_mapping(node, deep=True)
            main = "options" if key == "$choice" else "body" if key == "$repeat" else None
            if main is not None:
                return {key: body.pop(main, None), **body}
            return {key: [body.pop("low", None), body.pop("high", None)], **body}
        return {key: loader.construct_scalar(node)}  # reported as malformed by the parser

    return construct


for _tag, _key in (
    ("!choice", "$choice"),
    ("!int", "$int"),
    ("!float", "$float"),
    ("!repeat", "$repeat"),
):
    SpaceLoader.add_constructor(_tag, _tag_constructor(_key))


# --------------------------------------------------------------------------- dict form


_EXTRA_KEYS = {
    "$choice": {"id"},
    "$int": {"step", "log"},
    "$float": {"log"},
    "$repeat": {"times", "id"},
}


def _is_number(x: Any, kind: type) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) if kind is int else isinstance(x, int | float)


def _bounds(value: Any, kind: type, path: str, problems: list[Problem]) -> tuple[Any, Any] | None:
    name = "int" if kind is int else "float"
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(_is_number(v, kind) for v in value)
    ):
        problems.append(Problem(path, f"{name} range needs [low, high] {name}s, got {value!r}"))
        return None
    low, high = value
    if low > high:
        problems.append(Problem(path, f"{name} range low={low} is greater than high={high}"))
        return None
    return low, high


def _make_int(raw: Mapping[str, Any], path: str, problems: list[Problem]) -> IntRange | None:
    bounds = _bounds(raw["$int"], int, path, problems)
    step, log = raw.get("step", 1), raw.get("log", False)
    if not _is_number(step, int) or step < 1:
        problems.append(Problem(f"{path}.step", f"must be a positive integer, got {step!r}"))
        return None
    if not isinstance(log, bool):
        problems.append(Problem(f"{path}.log", f"must be true or false, got {log!r}"))
        return None
    if bounds and log and (bounds[0] < 1 or step != 1):
        problems.append(Problem(path, "a log int range needs low >= 1 and step 1"))
        return None
    return IntRange(bounds[0], bounds[1], step, log) if bounds else None


def _make_float(raw: Mapping[str, Any], path: str, problems: list[Problem]) -> FloatRange | None:
    bounds = _bounds(raw["$float"], float, path, problems)
    log = raw.get("log", False)
    if not isinstance(log, bool):
        problems.append(Problem(f"{path}.log", f"must be true or false, got {log!r}"))
        return None
    if bounds and log and bounds[0] <= 0:
        problems.append(Problem(path, f"a log float range needs low > 0, got {bounds[0]}"))
        return None
    return FloatRange(float(bounds[0]), float(bounds[1]), log) if bounds else None


def _check_id(value: Any, path: str, problems: list[Problem]) -> str | None:
    if value is None or (isinstance(value, str) and value.isidentifier()):
        return value
    problems.append(Problem(f"{path}.id", f"must be an identifier, got {value!r}"))
    return None


def _from_dict(raw: Mapping[str, Any], path: str, problems: list[Problem]) -> Any:
    """Turn a ``{$kind: ...}`` mapping into its dimension object (``None`` after a problem)."""
    keys = [k for k in raw if isinstance(k, str) and k.startswith("$")]
    if len(keys) > 1:
        problems.append(Problem(path, f"one dimension per value, got {sorted(keys)}"))
        return None
    key = keys[0]
    if key not in _EXTRA_KEYS:
        problems.append(
            Problem(path, f"unknown dimension {key!r}; use $choice, $int, $float or $repeat")
        )
        return None
    unknown = set(raw) - {key} - _EXTRA_KEYS[key]
    if unknown:
        problems.append(Problem(path, f"unknown key(s) {sorted(map(str, unknown))} for {key}"))
        return None
    if key == "$int":
        return _make_int(raw, path, problems)
    if key == "$float":
        return _make_float(raw, path, problems)
    ident = _check_id(raw.get("id"), path, problems)
    if key == "$choice":
        options = raw["$choice"]
        if not isinstance(options, list | tuple) or not options:
            problems.append(
                Problem(path, f"a choice needs a non-empty list of options, got {options!r}")
            )
            return None
        return Choice(
            [parse_dimensions(o, f"{path}.options[{i}]", problems) for i, o in enumerate(options)],
            ident,
        )
    body = raw["$repeat"]
    if isinstance(body, Mapping):
        body = [body]
    if not isinstance(body, list | tuple) or not body:
        problems.append(
            Problem(
                f"{path}.body", f"a repeat needs a node or a non-empty list of nodes, got {body!r}"
            )
        )
        return None
    times = parse_dimensions(raw.get("times", {"$int": [1, 2]}), f"{path}.times", problems)
    if not _valid_times(times):
        problems.append(
            Problem(
                f"{path}.times",
                f"must be an int >= 0, an int range or a choice of ints, got {times!r}",
            )
        )
        return None
    return Repeat(
        [parse_dimensions(b, f"{path}.body[{i}]", problems) for i, b in enumerate(body)],
        times,
        ident,
    )


def _valid_times(times: Any) -> bool:
    if isinstance(times, IntRange):
        return times.low >= 0
    if isinstance(times, Choice):
        return all(_is_number(o, int) and o >= 0 for o in times.options)
    return _is_number(times, int) and times >= 0


def parse_dimensions(raw: Any, path: str, problems: list[Problem]) -> Any:
    """Copy ``raw`` turning every ``{$kind: ...}`` mapping into a dimension object.

    Dimension objects already present (Python API) are validated and kept.
    """
    if isinstance(raw, IntRange):
        return _make_int(
            {"$int": [raw.low, raw.high], "step": raw.step, "log": raw.log}, path, problems
        )
    if isinstance(raw, FloatRange):
        return _make_float({"$float": [raw.low, raw.high], "log": raw.log}, path, problems)
    if isinstance(raw, Choice):
        return _from_dict({"$choice": raw.options, "id": raw.id}, path, problems)
    if isinstance(raw, Repeat):
        return _from_dict(
            {"$repeat": list(raw.body), "times": raw.times, "id": raw.id}, path, problems
        )
    if isinstance(raw, Mapping):
        if any(isinstance(k, str) and k.startswith("$") for k in raw):
            return _from_dict(raw, path, problems)
        return {
            k: parse_dimensions(v, f"{path}.{k}" if path else str(k), problems)
            for k, v in raw.items()
        }
    if isinstance(raw, list | tuple):
        return [parse_dimensions(v, f"{path}[{i}]", problems) for i, v in enumerate(raw)]
    return raw
