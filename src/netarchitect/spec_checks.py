"""Structural checks of a :class:`~netarchitect.spec.NetworkSpec` that need no tensors.

Each check returns a list of :class:`~netarchitect.errors.Problem` so that
validation reports every problem at once.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Mapping
from typing import Any

from torch import nn

from .errors import Problem, RegistryError, SpecError, suggest
from .registry import get_block, list_blocks
from .spec import NetworkSpec, _short

__all__ = [
    "CHANNEL_ARGS",
    "block_signature",
    "check_blocks",
    "check_graph",
    "check_init",
    "check_roles",
    "check_values",
    "forward_keywords",
    "topological_order",
]

#: First constructor arguments that the builder fills from the inferred input shape.
CHANNEL_ARGS = ("in_features", "in_channels", "dim")
_RESERVED = {"device", "dtype", "self"}


def topological_order(spec: NetworkSpec) -> list[str] | None:
    """Node ids in an order where every node follows its inputs; ``None`` on a cycle."""
    ids = {n.id for n in spec.nodes}
    deps = {n.id: [s for s in n.inputs if s in ids] for n in spec.nodes}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    for start in (n.id for n in spec.nodes):
        stack = [(start, iter(deps[start]))]
        if state.get(start) == 2:
            continue
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif state.get(child) == 1:
                return None
            elif state.get(child) is None:
                state[child] = 1
                stack.append((child, iter(deps[child])))
    return order


def _cycle_members(spec: NetworkSpec) -> list[str]:
    """Ids of nodes on a cycle (those Kahn's algorithm cannot remove)."""
    ids = {n.id for n in spec.nodes}
    indegree = {n.id: sum(1 for s in n.inputs if s in ids) for n in spec.nodes}
    users: dict[str, list[str]] = {i: [] for i in ids}
    for n in spec.nodes:
        for s in n.inputs:
            if s in ids:
                users[s].append(n.id)
    ready = [i for i, d in indegree.items() if d == 0]
    while ready:
        for u in users[ready.pop()]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    return [n.id for n in spec.nodes if indegree[n.id] > 0]


#: Node ids that are attributes of the node container (``nn.ModuleDict``): a module cannot
#: be stored under them (``keys``, ``train``, ``to``, ...).
RESERVED_NODE_IDS = frozenset(dir(nn.ModuleDict()))
#: Input and context names that ``Network.forward`` itself uses.
RESERVED_CALL_NAMES = frozenset({"self", "args", "kwargs", "return_nodes"})


def check_graph(spec: NetworkSpec) -> list[Problem]:
    """Duplicate or reserved ids, dangling references, merges, cycles and outputs."""
    problems: list[Problem] = []
    input_names = {i.name for i in spec.inputs}
    for name in sorted(input_names & RESERVED_CALL_NAMES):
        problems.append(Problem(f"inputs.{name}", f"{name!r} is reserved by Network.forward; rename the input"))
    for name in sorted(set(spec.context) & RESERVED_CALL_NAMES):
        problems.append(Problem("context", f"{name!r} is reserved by Network.forward; rename it"))
    seen: dict[str, int] = {}
    for i, node in enumerate(spec.nodes):
        if node.id in RESERVED_NODE_IDS:
            problems.append(Problem(f"nodes[{i}].id", f"{node.id!r} is reserved (an attribute of "
                                    "the module holding the nodes, like 'keys' or 'train'); rename it"))
        if node.id in seen:
            problems.append(Problem(f"nodes[{i}].id", f"duplicate id {node.id!r} (first used by nodes[{seen[node.id]}])"))
        elif node.id in input_names:
            problems.append(Problem(f"nodes[{i}].id", f"id {node.id!r} is already the name of an input"))
        seen.setdefault(node.id, i)
    known = input_names | set(seen)
    for i, node in enumerate(spec.nodes):
        for j, src in enumerate(node.inputs):
            if src not in known:
                problems.append(Problem(f"nodes[{i}].inputs[{j}]", f"unknown node or input {src!r}{suggest(src, known)}"))
            elif src == node.id:
                problems.append(Problem(f"nodes[{i}].inputs[{j}]", f"node {node.id!r} uses itself as input"))
        n_in = len(node.inputs)
        if n_in > 1 and node.merge is None:
            problems.append(Problem(f"nodes[{i}].merge", f"{n_in} inputs need a merge (add, concat, mul or gate)"))
        if node.merge == "gate" and n_in not in (2, 3):
            problems.append(Problem(f"nodes[{i}].merge", f"gate takes 2 inputs [a, g] or 3 inputs [a, b, g], got {n_in}"))
    if not any(p.message.endswith("uses itself as input") for p in problems):
        cycle = _cycle_members(spec)
        if cycle:
            problems.append(Problem("nodes", f"cycle through nodes {', '.join(repr(c) for c in cycle)}"))
    for k, out in enumerate(spec.outputs):
        if out not in known:
            problems.append(Problem(f"outputs[{k}]", f"{out!r} is not a node or input{suggest(out, known)}"))
    return problems + _check_context(spec, known) + _check_tie(spec, set(seen))


def _check_context(spec: NetworkSpec, known: set[str]) -> list[Problem]:
    """Context names are declared once, clash with no input or node, and are declared
    before a node takes them."""
    problems = []
    declared = set(spec.context)
    for name in spec.context:
        if name in known:
            problems.append(Problem("context", f"{name!r} is already an input or node name"))
    for i, node in enumerate(spec.nodes):
        for kwarg, name in node.context.items():
            if name not in declared:
                hint = suggest(name, declared) or f"; declare it under the top-level 'context' (declared: {sorted(declared)})"
                problems.append(Problem(f"nodes[{i}].context.{kwarg}", f"unknown context {name!r}{hint}"))
    return problems


def _check_tie(spec: NetworkSpec, node_ids: set[str]) -> list[Problem]:
    """Tie paths start at a node; no path is tied to itself or both tied and a tie source."""
    problems = []
    for target, source in spec.tie.items():
        path = f"tie.{target}"
        for what in (target, source):
            head = what.split(".", 1)[0]
            if head not in node_ids:
                problems.append(Problem(path, f"{what!r} does not start with a node id{suggest(head, node_ids)}"))
        if target == source:
            problems.append(Problem(path, "is tied to itself"))
        elif source in spec.tie:
            problems.append(Problem(path, f"source {source!r} is itself tied to {spec.tie[source]!r}; tie to that"))
    return problems


@functools.cache
def block_signature(cls: type[nn.Module]) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """Constructor parameters (without self/device/dtype) and their resolved type hints
    (computed once per class; the result is shared, do not change it).

    A constructor that passes ``**kwargs`` on to its parent's (``SwiGLU`` to ``GatedMLP``)
    also accepts the parent's parameters: they are followed up the class hierarchy.
    """
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        for name, p in sig.parameters.items():
            if name not in _RESERVED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p)
        try:
            resolved = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 (unresolvable annotations: skip type checks)
            resolved = {}
        for name, hint in resolved.items():
            hints.setdefault(name, hint)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params, hints


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (unknown hint kinds accept anything)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (tuple, list, typing.Sequence) or hint in (tuple, list):
        return isinstance(value, tuple | list)
    if origin is not None:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (dict, Mapping):
        return isinstance(value, Mapping)
    return True  # classes, callables, partials: left to the block's own validation


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def forward_keywords(cls: type[nn.Module]) -> set[str] | None:
    """Keyword arguments ``cls.forward`` accepts after its tensors (``None``: any, ``**kwargs``)."""
    try:
        sig = inspect.signature(cls.forward)
    except (TypeError, ValueError):  # pragma: no cover - forward without a signature
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_blocks(spec: NetworkSpec) -> list[Problem]:
    """Unknown blocks, unknown, missing or mistyped parameters, context a block cannot take."""
    problems: list[Problem] = []
    for i, node in enumerate(spec.nodes):
        try:
            cls = get_block(node.block)
        except RegistryError:
            problems.append(Problem(f"nodes[{i}].block", f"unknown block {node.block!r}{suggest(node.block, list_blocks())}"))
            continue
        accepted = forward_keywords(cls)
        for kwarg in node.context:
            if accepted is not None and kwarg not in accepted:
                problems.append(Problem(f"nodes[{i}].context.{kwarg}",
                                        f"block {node.block!r} does not take {kwarg}={suggest(kwarg, accepted)}"))
        params, hints = block_signature(cls)
        for key, value in node.params.items():
            path = f"nodes[{i}].params.{key}"
            if key not in params:
                problems.append(Problem(path, f"unknown parameter of block {node.block!r}{suggest(key, params)}"))
                continue
            hint = hints.get(key, inspect.Parameter.empty)
            if not _type_ok(value, hint):
                problems.append(Problem(path, f"expected {_hint_name(hint)}, got {type(value).__name__} {_short(value)}"))
        positional = list(params)
        for name, p in params.items():
            if p.default is not inspect.Parameter.empty or name in node.params:
                continue
            if positional and name == positional[0] and name in CHANNEL_ARGS:
                continue  # filled from the inferred input shape
            problems.append(Problem(f"nodes[{i}].params.{name}", f"missing required parameter of block {node.block!r}"))
    return problems


def check_roles(spec: NetworkSpec) -> list[Problem]:
    """The roles' kind is a registered network kind, whose own checks then run."""
    if not spec.roles:
        return []
    from .registry import get_network_class, list_network_kinds

    kind = spec.roles["kind"]
    try:
        cls = get_network_class(kind)
    except RegistryError:
        return [Problem("roles.kind", f"unknown network kind {kind!r}{suggest(kind, list_network_kinds())}")]
    check = getattr(cls, "check_roles", None)
    return list(check(spec)) if callable(check) else []


_PLAIN = (str, bool, int, float, type(None))
#: Integers a spec may hold (a C ``int64``).
INT_RANGE = (-(2**63), 2**63 - 1)


def value_problem(value: Any) -> str | None:
    """Why ``value`` is not plain, finite spec data, or ``None`` (iterative: deep is fine)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, Mapping):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif not isinstance(v, _PLAIN):
            return f"must be plain data (null, bool, number, string, list, mapping), got {type(v).__name__}"
        elif isinstance(v, float) and not math.isfinite(v):
            return f"must be a finite number, got {v}"
        elif isinstance(v, int) and not isinstance(v, bool) and not INT_RANGE[0] <= v <= INT_RANGE[1]:
            return f"integer {_short(v)} does not fit in 64 bits"
    return None


def check_values(spec: NetworkSpec) -> list[Problem]:
    """Params, roles and init rules hold plain, finite data (so hashing and saving never fail)."""
    problems = []
    for i, node in enumerate(spec.nodes):
        for key, value in node.params.items():
            why = value_problem(value)
            if why:
                problems.append(Problem(f"nodes[{i}].params.{key}", why))
    for name, value in (("roles", spec.roles), ("init", spec.init)):
        why = value_problem(value)
        if why:
            problems.append(Problem(name, why))
    return problems


def check_init(spec: NetworkSpec) -> list[Problem]:
    """The ``init`` rules name known initialisers with arguments they accept."""
    if not spec.init:
        return []
    from .init import InitPolicy

    try:
        InitPolicy.from_config(spec.init)
    except SpecError as exc:
        return list(exc.problems)
    return []
