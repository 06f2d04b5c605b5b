"""Network specs: typed, immutable, serialisable descriptions of a DAG of blocks.

A spec is data. It loads from YAML, JSON or a dict, round-trips unchanged
through :meth:`NetworkSpec.to_dict`, and hashes stably (:func:`spec_hash`).
Structural validation (:func:`validate_spec`) collects *every* problem with its
path; shape problems are found by :func:`netarchitect.network.infer_shapes`.

Format::

    name: residual_mlp
    inputs:
      x: {shape: [64], dtype: float32}      # per-sample shape (no batch dimension)
    nodes:
      - {id: fc1, block: linear, params: {out_features: 64}, inputs: [x]}
      - {id: act, block: relu}              # inputs default to the previous node
      - {id: res, block: identity, inputs: [act, x], merge: add}
    outputs: [res]

A node with several inputs combines them with its ``merge`` before its block:
``add``, ``mul``, ``concat`` (along per-sample dimension ``merge_dim``, default
0: channels of a channels-first tensor, features of a vector) or ``gate``
(inputs ``[a, g]``: ``a * sigmoid(g)``; inputs ``[a, b, g]``:
``sigmoid(g) * a + (1 - sigmoid(g)) * b``, the highway carry gate); ``args``
passes them to the block as separate positional arguments (cross-attention:
``block(x, context)``).

Sequence models need more than edges (see :mod:`netarchitect.network`)::

    inputs:
      input_ids: {shape: [16], dtype: int64}   # the probe length; any length runs
    context: [attention_mask, kv_cache]        # optional per-call values
    nodes:
      - {id: embed, block: token_embedding, params: {vocab_size: 100, dim: 64},
         context: [attention_mask, kv_cache]}  # forward(..., attention_mask=, kv_cache=)
      - {id: h0, block: transformer_block, params: {num_heads: 4, causal: true},
         context: {attention_mask: attention_mask, kv_cache: kv_cache}}
      - {id: head, block: lm_head, params: {out_features: 100}}
    tie: {head.weight: embed.token.weight}    # target parameter (or module): source
    roles: {kind: causal_lm, ...}             # which Network class, and its named nodes

A node's ``context`` lists the context values it takes (``kwarg: name`` when the
keyword differs); ``tie`` makes a parameter or module the same object as another
(shared weights); ``roles`` names the :class:`~netarchitect.network.Network`
subclass ``build`` returns and the nodes its methods use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, SpecError

__all__ = [
    "DTYPES",
    "MERGES",
    "InputSpec",
    "NetworkSpec",
    "NodeSpec",
    "load_spec",
    "save_spec",
    "spec_hash",
    "validate_spec",
]

MERGES = ("add", "concat", "mul", "gate", "args")
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_TOP_KEYS = {"name", "description", "inputs", "context", "nodes", "outputs", "tie", "roles", "init"}
_NODE_KEYS = {"id", "block", "params", "inputs", "merge", "merge_dim", "context"}


class FrozenDict(dict):  # type: ignore[type-arg]
    """A read-only, hashable, picklable dict (spec params and init rules)."""

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("spec values are immutable; use NetworkSpec.replace_node or build a new spec")

    __setitem__ = __delitem__ = __ior__ = _readonly  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self


def _freeze(value: Any) -> Any:
    """Deep-freeze a JSON-like value: dicts become :class:`FrozenDict`, lists tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze`: plain dicts and lists (for YAML/JSON)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class InputSpec:
    """A named network input: per-sample ``shape`` (no batch dimension) and ``dtype``."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class NodeSpec:
    """One node: a registered ``block`` with ``params``, fed by ``inputs`` combined by ``merge``."""

    id: str
    block: str
    params: Mapping[str, Any] = field(default_factory=lambda: FrozenDict())
    inputs: tuple[str, ...] = ()
    merge: str | None = None
    merge_dim: int = 0
    context: Mapping[str, str] = field(default_factory=lambda: FrozenDict())

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _freeze(dict(self.params)))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        context = self.context
        if isinstance(context, list | tuple):
            context = {name: name for name in context}
        object.__setattr__(self, "context", FrozenDict(context))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "block": self.block}
        if self.params:
            out["params"] = _thaw(self.params)
        out["inputs"] = list(self.inputs)
        if self.merge is not None:
            out["merge"] = self.merge
            if self.merge == "concat" and self.merge_dim != 0:
                out["merge_dim"] = self.merge_dim
        if self.context:
            same = all(k == v for k, v in self.context.items())
            out["context"] = list(self.context) if same else dict(self.context)
        return out


@dataclass(frozen=True)
class NetworkSpec:
    """A whole network: named inputs, nodes in any order (a DAG), output node ids."""

    name: str
    inputs: tuple[InputSpec, ...]
    nodes: tuple[NodeSpec, ...]
    outputs: tuple[str, ...]
    description: str = ""
    init: tuple[Mapping[str, Any], ...] = ()
    context: tuple[str, ...] = ()
    tie: Mapping[str, str] = field(default_factory=lambda: FrozenDict())
    roles: Mapping[str, Any] = field(default_factory=lambda: FrozenDict())

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "init", tuple(_freeze(dict(r)) for r in self.init))
        object.__setattr__(self, "context", tuple(self.context))
        object.__setattr__(self, "tie", FrozenDict(self.tie))
        object.__setattr__(self, "roles", _freeze(dict(self.roles)))

    def node(self, node_id: str) -> NodeSpec:
        """The node named ``node_id`` (``KeyError`` if absent)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form; ``load_spec(spec.to_dict()) == spec``."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["inputs"] = {i.name: i.to_dict() for i in self.inputs}
        if self.context:
            out["context"] = list(self.context)
        out["nodes"] = [n.to_dict() for n in self.nodes]
        out["outputs"] = list(self.outputs)
        if self.tie:
            out["tie"] = dict(self.tie)
        if self.roles:
            out["roles"] = _thaw(self.roles)
        if self.init:
            out["init"] = [_thaw(r) for r in self.init]
        return out

    def replace(self, **changes: Any) -> NetworkSpec:
        """A copy with top-level fields replaced (``name=``, ``roles=``, ``nodes=``, ...)."""
        return dataclasses.replace(self, **changes)

    def replace_node(self, node_id: str, **changes: Any) -> NetworkSpec:
        """A copy with node ``node_id``'s fields replaced (``params=...``, ``block=...``)."""
        nodes = []
        for n in self.nodes:
            if n.id == node_id:
                fields = {**n.to_dict(), **changes}
                fields.setdefault("params", {})
                n = NodeSpec(**fields)
            nodes.append(n)
        return self.replace(nodes=tuple(nodes))


def spec_hash(spec: NetworkSpec | Mapping[str, Any]) -> str:
    """SHA-256 of the spec's canonical JSON (sorted keys, no spaces): equal in every process."""
    data = spec.to_dict() if isinstance(spec, NetworkSpec) else _thaw(spec)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- parsing


def read_text_file(path: Path, what: str = "spec file") -> str:
    """The UTF-8 text of ``path``, or a :class:`SpecError` saying why it cannot be read."""
    if path.is_dir():
        raise SpecError(f"{what} {str(path)!r} is a directory")
    if not path.is_file():
        raise SpecError(f"{what} {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if b"\x00" in data:
        raise SpecError(f"{what} {str(path)!r} is binary, not YAML or JSON text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start})") from None


def _read_source(source: str | Path) -> Any:
    """Parse a path or a YAML/JSON string into plain data (within :mod:`._yaml`'s bounds)."""
    from ._yaml import safe_load

    where = "spec"
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
    ):
        path = Path(source)
        text = read_text_file(path)
        where = str(path)
    else:
        text = str(source)
    return safe_load(text, where)


#: Largest size of one dimension, and of one sample, that a declared input may have.
MAX_DIM = 2**31 - 1
MAX_SAMPLE_NUMEL = 2**40


def shape_problem(shape: tuple[int, ...] | list[int]) -> str | None:
    """Why a per-sample ``shape`` of positive integers is too large, or ``None``."""
    if len(shape) > 8:
        return f"has {len(shape)} dimensions; at most 8 are supported"
    if any(d > MAX_DIM for d in shape):
        return f"{_short(list(shape))}: a dimension exceeds {MAX_DIM:,}"
    numel = 1
    for d in shape:
        numel *= d
    if numel > MAX_SAMPLE_NUMEL:
        return f"{_short(list(shape))}: {numel:.3g} elements per sample exceeds {MAX_SAMPLE_NUMEL:.3g}"
    return None


def _parse_inputs(raw: Any, problems: list[Problem]) -> list[InputSpec]:
    if isinstance(raw, Mapping):
        items = [(k, v) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, Mapping) or "name" not in entry:
                problems.append(Problem(f"inputs[{i}]", "must be a mapping with 'name' and 'shape'"))
                continue
            items.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
    else:
        problems.append(Problem("inputs", f"must be a mapping of name -> {{shape, dtype}}, got {type(raw).__name__}"))
        return []
    if not items:
        problems.append(Problem("inputs", "at least one input is required"))
    out = []
    for name, body in items:
        path = f"inputs.{name}"
        if not isinstance(name, str) or not _ID.match(name):
            problems.append(Problem(path, f"input name {_short(name)} is not an identifier"))
            continue
        if isinstance(body, list):
            body = {"shape": body}
        if not isinstance(body, Mapping):
            problems.append(Problem(path, "must be a mapping with 'shape' (and optional 'dtype')"))
            continue
        unknown = set(body) - {"shape", "dtype"}
        if unknown:
            problems.append(Problem(path, f"unknown key(s) {sorted(unknown)}"))
        shape = body.get("shape")
        if not isinstance(shape, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            problems.append(Problem(f"{path}.shape", f"must be a list of positive integers, got {_short(shape)}"))
            continue
        why = shape_problem(shape)
        if why:
            problems.append(Problem(f"{path}.shape", why))
            continue
        dtype = body.get("dtype", "float32")
        if dtype not in DTYPES:
            from .errors import suggest

            problems.append(Problem(f"{path}.dtype", f"unknown dtype {_short(dtype)}{suggest(str(dtype)[:60], DTYPES)}"))
            continue
        out.append(InputSpec(name, tuple(shape), dtype))
    return out


def _parse_node(i: int, raw: Any, previous: str | None, problems: list[Problem]) -> NodeSpec | None:
    path = f"nodes[{i}]"
    if not isinstance(raw, Mapping):
        problems.append(Problem(path, f"must be a mapping, got {type(raw).__name__}"))
        return None
    unknown = set(raw) - _NODE_KEYS
    if unknown:
        from .errors import suggest

        hints = "".join(suggest(str(k), _NODE_KEYS) for k in sorted(unknown, key=str))
        problems.append(Problem(path, f"unknown key(s) {_short(sorted(map(str, unknown)))}{hints}"))
    ok = True
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not _ID.match(node_id):
        problems.append(Problem(f"{path}.id", f"must be an identifier (letters, digits, _), got {_short(node_id)}"))
        ok = False
    block = raw.get("block")
    if not isinstance(block, str) or not block:
        problems.append(Problem(f"{path}.block", f"must be a block name, got {_short(block)}"))
        ok = False
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        problems.append(Problem(f"{path}.params", f"must be a mapping, got {type(params).__name__}"))
        ok = False
    inputs = raw.get("inputs", [previous] if previous else None)
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list | tuple) or not inputs or not all(isinstance(s, str) for s in inputs):
        problems.append(Problem(f"{path}.inputs", f"must be a non-empty list of node or input names, got {_short(inputs)}"))
        ok = False
    merge = raw.get("merge")
    if merge is not None and merge not in MERGES:
        from .errors import suggest

        problems.append(Problem(f"{path}.merge", f"unknown merge {_short(merge)}{suggest(str(merge)[:60], MERGES)}; use one of {', '.join(MERGES)}"))
        merge = "add"  # keep the node so the rest of the spec is still checked
    merge_dim = raw.get("merge_dim", 0)
    if not isinstance(merge_dim, int) or isinstance(merge_dim, bool):
        problems.append(Problem(f"{path}.merge_dim", f"must be an integer, got {_short(merge_dim)}"))
        ok = False
    context = _parse_node_context(raw.get("context"), f"{path}.context", problems)
    if not ok or context is None:
        return None
    return NodeSpec(node_id, block, params, tuple(inputs), merge, merge_dim, context)


def _parse_node_context(raw: Any, path: str, problems: list[Problem]) -> dict[str, str] | None:
    """A node's context: a list of names, or a mapping ``keyword: context name``."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list | tuple):
        raw = {name: name for name in raw} if all(isinstance(n, str) for n in raw) else None
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and _ID.match(k) and _ID.match(v)
        for k, v in raw.items()
    ):
        problems.append(Problem(path, "must be a list of context names or a mapping "
                                      "keyword -> context name (identifiers)"))
        return None
    return dict(raw)


def _parse_context(raw: Any, problems: list[Problem]) -> list[str]:
    """The top-level ``context``: names of the per-call values the network accepts."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not all(isinstance(n, str) and _ID.match(n) for n in raw):
        problems.append(Problem("context", f"must be a list of identifiers, got {_short(raw)}"))
        return []
    if len(set(raw)) != len(raw):
        problems.append(Problem("context", "names must be unique"))
    return list(raw)


def _parse_tie(raw: Any, problems: list[Problem]) -> dict[str, str]:
    """``tie``: target path -> source path (``node.sub.param`` or ``node.sub``)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(Problem("tie", f"must be a mapping target -> source, got {_short(raw)}"))
        return {}
    out = {}
    for target, source in raw.items():
        for what in (target, source):
            if not isinstance(what, str) or not _PATH.match(what):
                problems.append(Problem(f"tie.{_short(target)}", f"{_short(what)} is not a "
                                        "dotted path like 'head.weight'"))
                break
        else:
            out[target] = source
    return out


def _parse_roles(raw: Any, problems: list[Problem]) -> dict[str, Any]:
    """``roles``: ``{kind: <network kind>, <role>: <node id or ids>, ...}``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not isinstance(raw.get("kind"), str):
        problems.append(Problem("roles", "must be a mapping with a 'kind' (a network kind name)"))
        return {}
    return dict(raw)


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never quote a whole file)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse(data: Any) -> tuple[NetworkSpec | None, list[Problem]]:
    """Parse plain data; the spec is ``None`` only when a node could not be read at all."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        return None, [Problem("", f"a spec must be a mapping, got {type(data).__name__}")]
    unknown = set(data) - _TOP_KEYS
    if unknown:
        problems.append(Problem("", f"unknown top-level key(s) {_short(sorted(map(str, unknown)))}"))
    name = data.get("name", "network")
    if not isinstance(name, str):
        problems.append(Problem("name", f"must be a string, got {_short(name)}"))
        name = "network"
    inputs = _parse_inputs(data.get("inputs"), problems)
    raw_nodes = data.get("nodes")
    nodes: list[NodeSpec] = []
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.append(Problem("nodes", "must be a non-empty list of nodes"))
        raw_nodes = []
    previous = inputs[0].name if len(inputs) == 1 else None
    complete = True
    for i, raw in enumerate(raw_nodes):
        node = _parse_node(i, raw, previous, problems)
        if node is not None:
            nodes.append(node)
            previous = node.id
        else:
            complete = False
            previous = raw.get("id") if isinstance(raw, Mapping) else None
    outputs = data.get("outputs", [nodes[-1].id] if nodes else [])
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, list | tuple) or not outputs or not all(isinstance(o, str) for o in outputs):
        problems.append(Problem("outputs", f"must be a non-empty list of node names, got {_short(outputs)}"))
        outputs = []
    init = data.get("init", [])
    if not isinstance(init, list) or not all(isinstance(r, Mapping) for r in init):
        problems.append(Problem("init", "must be a list of rule mappings"))
        init = []
    description = data.get("description", "")
    context = _parse_context(data.get("context"), problems)
    tie = _parse_tie(data.get("tie"), problems)
    roles = _parse_roles(data.get("roles"), problems)
    if not complete or not inputs or not nodes:
        return None, problems
    spec = NetworkSpec(name, tuple(inputs), tuple(nodes), tuple(outputs), str(description),
                       tuple(init), tuple(context), tie, roles)
    return spec, problems


def load_spec(source: NetworkSpec | Mapping[str, Any] | str | Path, *, validate: bool = True) -> NetworkSpec:
    """Load a spec from a ``NetworkSpec``, a dict, a YAML/JSON string or a file path.

    Raises :class:`SpecError` listing every problem found (with paths).
    """
    if isinstance(source, NetworkSpec):
        spec = source
    else:
        if isinstance(source, Mapping):
            from ._yaml import check_data_bounds

            check_data_bounds(source)
        data = source if isinstance(source, Mapping) else _read_source(source)
        parsed, problems = _parse(data)
        if problems:
            if parsed is not None:  # report the structural problems of the rest too
                reported = {p.path for p in problems}
                problems += [p for p in validate_spec(parsed) if p.path not in reported]
            raise SpecError(problems=problems)
        assert parsed is not None
        spec = parsed
    if validate:
        problems = validate_spec(spec)
        if problems:
            raise SpecError(problems=problems)
    return spec


def save_spec(spec: NetworkSpec, path: str | Path) -> Path:
    """Write ``spec`` as YAML (or JSON for a ``.json`` path) atomically."""
    from ._io import atomic_write_text

    path = Path(path)
    data = spec.to_dict()
    if path.suffix == ".json":
        text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    atomic_write_text(path, text)
    return path


# --------------------------------------------------------------------------- validation


def validate_spec(spec: NetworkSpec) -> list[Problem]:
    """Every structural problem of ``spec`` (block names, parameters, references, cycles)."""
    from .spec_checks import check_blocks, check_graph, check_init, check_roles, check_values

    graph = check_graph(spec)
    values = check_values(spec)
    problems = graph + values + check_blocks(spec)
    if not values:
        problems += check_init(spec)
    if not graph:
        problems += check_roles(spec)
    return problems
