"""Search spaces over specs: list their dimensions, sample concrete validated specs.

A space file is a spec (see :mod:`netarchitect.spec`) in which values may be
dimensions (:mod:`netarchitect.search.dimensions`), plus an optional ``train``
section of training hyper-parameters (values or dimensions). Strings ``$name``
are replaced by ``variables`` (the task gives ``$num_classes``); ``inputs`` may be
left out and is then filled from the task. Sampling is define-by-run: a
dimension inside an option that is not chosen is not sampled. Each dimension's
Optuna parameter name is its path in the space (``nodes[2].params.out_features``,
``nodes[3]`` for a choice of sub-graphs, ``nodes[4].times`` for a repeat count,
``train.lr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._yaml import check_bounds, check_data_bounds
from ..errors import Problem, RegistryError, SpecError
from ..registry import get_block
from ..spec import NetworkSpec, load_spec, read_text_file
from .dimensions import Choice, Dim, FloatRange, IntRange, Repeat, SpaceLoader, parse_dimensions
from .expand import Expander, FirstTrial, TrialLike

__all__ = ["TRAIN_KEYS", "Dimension", "SearchSpace", "load_space_data"]

#: Training hyper-parameters a space's ``train`` section may set (see ``trainer.TrainConfig``).
TRAIN_KEYS = (
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
    "warmup_epochs",
    "label_smoothing",
    "augment",
    "patience",
)
_TOP_KEYS = {
    "name", "description", "inputs", "context", "nodes", "outputs", "tie", "roles", "init", "train"
}


@dataclass(frozen=True)
class Dimension:
    """One searchable value: its path in the space (= Optuna parameter name) and its range."""

    path: str
    dim: Dim | Repeat

    @property
    def size(self) -> float:
        """How many values it can take (``inf`` for a float range)."""
        d = self.dim.times if isinstance(self.dim, Repeat) else self.dim
        if isinstance(d, Choice):
            return len(d.options)
        if isinstance(d, IntRange):
            return (d.high - d.low) // d.step + 1
        if isinstance(d, FloatRange):
            return float("inf") if d.high > d.low else 1
        return 1  # a repeat with a fixed count

    def describe(self) -> str:
        if isinstance(self.dim, Repeat):
            t = self.dim.times
            times = t.describe() if hasattr(t, "describe") else t
            return f"repeat {times} times: {_summary(list(self.dim.body))}"
        if isinstance(self.dim, Choice) and self.dim.by_index:
            return "choice of " + " | ".join(_summary(o) for o in self.dim.options)
        return self.dim.describe()


def _summary(raw: Any) -> str:
    """A one-line picture of a value or of nodes: ``conv_norm_act → maxpool2d``."""
    if raw is None or raw == []:
        return "(nothing)"
    if isinstance(raw, list):
        return " → ".join(_summary(e) for e in raw)
    if isinstance(raw, Repeat):
        return f"[{_summary(list(raw.body))}]×n"
    if isinstance(raw, Choice):
        return "(" + " | ".join(_summary(o) for o in raw.options) + ")"
    if isinstance(raw, Mapping) and "block" in raw:
        return _summary(raw["block"]) if not isinstance(raw["block"], str) else raw["block"]
    return str(raw)


def load_space_data(source: Mapping[str, Any] | str | Path) -> Any:
    """Read a space from a dict, a YAML/JSON string or a file, understanding the dimension tags."""
    if isinstance(source, Mapping):
        check_data_bounds(source, "space")
        return source
    text, where = str(source), "space"
    if isinstance(source, Path) or ("\n" not in text and text.endswith((".yaml", ".yml", ".json"))):
        path = Path(source)
        text, where = read_text_file(path, "search space file"), str(path)
    try:
        check_bounds(text, where)  # alias bombs and deep nesting, before composing
        return yaml.load(text, Loader=SpaceLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(
            f"{where}: malformed YAML{at}: {getattr(exc, 'problem', None) or exc}"
        ) from None


def _walk(raw: Any, path: str, out: list[Dimension], nodes_context: bool = False) -> None:
    """Collect every dimension below ``raw`` (all branches), in document order."""
    if isinstance(raw, Repeat):
        out.append(Dimension(f"{path}.times", raw))
        for i, b in enumerate(raw.body):
            _walk(b, f"{path}.body[{i}]", out, True)
    elif isinstance(raw, Choice):
        out.append(Dimension(path, raw))
        for i, o in enumerate(raw.options):
            if nodes_context and isinstance(o, list):
                for j, e in enumerate(o):
                    _walk(e, f"{path}.options[{i}][{j}]", out, True)
            else:
                _walk(o, f"{path}.options[{i}]", out, nodes_context)
    elif isinstance(raw, IntRange | FloatRange):
        out.append(Dimension(path, raw))
    elif isinstance(raw, Mapping):
        for k, v in raw.items():
            _walk(
                v, f"{path}.{k}" if path else str(k), out, nodes_context=(k == "nodes" and not path)
            )
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            _walk(v, f"{path}[{i}]", out, nodes_context)


def _check_blocks(raw: Any, path: str, problems: list[Problem]) -> None:
    """Every node's block name (each option of a block choice) must be registered."""
    if isinstance(raw, Repeat):
        for i, b in enumerate(raw.body):
            _check_blocks(b, f"{path}.body[{i}]", problems)
    elif isinstance(raw, Choice):
        for i, o in enumerate(raw.options):
            for j, e in enumerate(o if isinstance(o, list) else [o]):
                _check_blocks(
                    e, f"{path}.options[{i}]" + (f"[{j}]" if isinstance(o, list) else ""), problems
                )
    elif isinstance(raw, Mapping):
        block = raw.get("block")
        for i, name in enumerate(block.options if isinstance(block, Choice) else [block]):
            if isinstance(name, str):
                try:
                    get_block(name)
                except RegistryError as exc:
                    where = f"{path}.block" + (
                        f".options[{i}]" if isinstance(block, Choice) else ""
                    )
                    problems.append(Problem(where, str(exc)))


class SearchSpace:
    """A spec with searchable values: build it with :meth:`from_spec`, draw with :meth:`sample`."""

    def __init__(self, data: dict[str, Any], variables: Mapping[str, Any]) -> None:
        self._data = data
        self._variables = dict(variables)
        dims: list[Dimension] = []
        _walk(data, "", dims)
        self.dimensions: list[Dimension] = dims

    @classmethod
    def from_spec(
        cls,
        source: Mapping[str, Any] | str | Path,
        *,
        variables: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> SearchSpace:
        """Parse and check a space; ``inputs`` (``{name: shape}``) fills or checks its inputs.

        Raises :class:`SpecError` with the path of every problem: a malformed
        dimension, an unknown block in any option, a space without a free
        dimension, or a first candidate that is not a valid spec.
        """
        raw = load_space_data(source)
        if not isinstance(raw, Mapping):
            raise SpecError(f"a search space must be a mapping, got {type(raw).__name__}")
        problems: list[Problem] = []
        unknown = set(raw) - _TOP_KEYS
        if unknown:
            problems.append(Problem("", f"unknown top-level key(s) {sorted(map(str, unknown))}"))
        data = parse_dimensions(dict(raw), "", problems)
        _check_inputs(data, inputs, problems)
        train = data.get("train") or {}
        if not isinstance(train, Mapping):
            problems.append(
                Problem("train", f"must be a mapping of hyper-parameters, got {train!r}")
            )
        else:
            for key in set(train) - set(TRAIN_KEYS):
                problems.append(
                    Problem(
                        f"train.{key}",
                        f"unknown training hyper-parameter; use one of {', '.join(TRAIN_KEYS)}",
                    )
                )
        nodes = data.get("nodes")
        for i, n in enumerate(nodes if isinstance(nodes, list) else []):
            _check_blocks(n, f"nodes[{i}]", problems)
        if problems:
            raise SpecError(problems=problems)
        space = cls(data, variables or {})
        if not any(d.size > 1 for d in space.dimensions):
            raise SpecError("the search space has no free dimension: every value is fixed")
        try:
            space.sample(FirstTrial())
        except SpecError as exc:
            raise SpecError(
                problems=[
                    Problem(p.path, f"{p.message} (in the space's first candidate)")
                    for p in exc.problems
                ]
            ) from None
        return space

    @property
    def data(self) -> dict[str, Any]:
        """The parsed space (dimension objects in place of searchable values)."""
        return self._data

    def sample(self, trial: TrialLike) -> NetworkSpec:
        """Sample every dimension that the chosen options reach; returns a validated spec."""
        data = self._data
        inputs = data.get("inputs")
        names = list(inputs) if isinstance(inputs, Mapping) else []
        ex = Expander(trial, self._variables, names[0] if len(names) == 1 else None)
        nodes = data.get("nodes")
        ex.elements(nodes if isinstance(nodes, list) else [], "nodes")
        spec: dict[str, Any] = {
            k: ex.value(v, k) for k, v in data.items() if k not in ("nodes", "train", "outputs")
        }
        spec["nodes"] = ex.nodes
        if "outputs" in data:
            outs = ex.value(data["outputs"], "outputs")
            outs = outs if isinstance(outs, list) else [outs]
            spec["outputs"] = [ex.scope.resolve(o) if isinstance(o, str) else o for o in outs]
        return load_spec(spec)

    def suggest_all(self, trial: TrialLike) -> None:
        """Sample every dimension, whether the chosen options reach it or not.

        For samplers that only evolve parameters present in every trial (Optuna's
        NSGA-II uses the intersection search space): without this, a dimension inside
        a choice would be drawn at random forever. :meth:`sample` then reuses the values.
        """
        for d in self.dimensions:
            dim = d.dim.times if isinstance(d.dim, Repeat) else d.dim
            if isinstance(dim, IntRange):
                trial.suggest_int(d.path, dim.low, dim.high, step=dim.step, log=dim.log)
            elif isinstance(dim, FloatRange):
                trial.suggest_float(d.path, dim.low, dim.high, log=dim.log)
            elif isinstance(dim, Choice):
                trial.suggest_categorical(d.path, dim.values)

    def sample_train(self, trial: TrialLike) -> dict[str, Any]:
        """Sample the ``train`` section: training hyper-parameters by name."""
        ex = Expander(trial, self._variables, None)
        return {k: ex.value(v, f"train.{k}") for k, v in (self._data.get("train") or {}).items()}

    def describe(self) -> list[tuple[str, str]]:
        """``(path, range)`` of every dimension, in document order."""
        return [(d.path, d.describe()) for d in self.dimensions]


def _check_inputs(
    data: dict[str, Any], inputs: Mapping[str, Any] | None, problems: list[Problem]
) -> None:
    """Fill ``data['inputs']`` from ``inputs`` or check that their shapes agree."""
    if inputs is None:
        return
    declared = data.get("inputs")
    if declared is None:
        data["inputs"] = {name: {"shape": list(shape)} for name, shape in inputs.items()}
        return
    if not isinstance(declared, Mapping):
        return  # load_spec reports it
    for name, shape in inputs.items():
        body = declared.get(name)
        got = body.get("shape") if isinstance(body, Mapping) else body
        if got is None:
            problems.append(
                Problem(
                    "inputs", f"the task provides input {name!r}, which the space does not declare"
                )
            )
        elif list(got) != list(shape):
            problems.append(
                Problem(
                    f"inputs.{name}.shape",
                    f"the space expects {list(got)} but the task gives {list(shape)}",
                )
            )
