"""Shared machinery of model surgery: name matching, copies and spec-edit rebuilds.

A surgery on a spec-built :class:`~netarchitect.network.Network` is a *spec edit plus a
weight mapping*: the edited spec is built (on the model's device and dtype) and every
tensor that still has a place is copied over (:func:`rebuild`). The result therefore
satisfies the round trip by construction: ``build(new.spec)`` with ``new``'s state dict
loaded is ``new``. Any other ``nn.Module`` is edited on a deep copy. Either way the
input model is never changed, also when the edit fails.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ShapeError, SpecError, suggest
from ..network import Network, build
from ..spec import NetworkSpec, load_spec

__all__: list[str] = []

Patterns = str | Sequence[str]
#: ``adapt(key, old_tensor, new_tensor)`` fills ``new_tensor`` from an old one of another
#: shape and returns True, or returns False (the shapes do not fit).
Adapter = Callable[[str, Tensor, Tensor], bool]


def is_spec_built(model: nn.Module) -> bool:
    """Whether ``model`` is a spec-built :class:`Network` (surgery edits its spec)."""
    return isinstance(model, Network)


def as_patterns(patterns: Patterns, what: str) -> list[str]:
    """``patterns`` as a non-empty list of strings (a single string is one pattern)."""
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    if not items or not all(isinstance(p, str) and p for p in items):
        raise SpecError(f"{what} must be a non-empty glob or a list of them, got {patterns!r}")
    return items


def match(names: Sequence[str], patterns: Patterns, *, what: str,
          hints: Iterable[str] | None = None) -> list[str]:
    """The ``names`` matched by any glob of ``patterns`` (in ``names`` order).

    A name matches when the glob matches it or names one of its ancestors (``stem``
    matches ``stem.conv.weight``). A glob that matches nothing is a :class:`SpecError`
    naming it and the closest of ``hints`` (default: ``names``).
    """
    chosen: set[str] = set()
    for pattern in as_patterns(patterns, what):
        hit = {n for n in names if _matches(n, pattern)}
        if not hit:
            candidates = list(dict.fromkeys(hints if hints is not None else names))
            tops = list(dict.fromkeys(n.split(".")[0] for n in candidates))
            raise SpecError(
                f"{what} {pattern!r} matches nothing{suggest(pattern, candidates)}; "
                f"top-level names: {', '.join(tops[:8])}{', ...' if len(tops) > 8 else ''}",
                path=what,
            )
        chosen |= hit
    return [n for n in names if n in chosen]


def _matches(name: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(name, pattern):
        return True
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts)))


def module_names(model: nn.Module) -> list[str]:
    """Dotted names of every submodule (``nodes.`` stripped too for a Network)."""
    names = [n for n, _ in model.named_modules() if n]
    if is_spec_built(model):
        names += [n[len("nodes."):] for n in names if n.startswith("nodes.")]
    return names


def node_ids(model: Network, names: Patterns, what: str) -> list[str]:
    """Node ids of a Network named by ``names`` (ids, ``nodes.<id>`` or globs over ids)."""
    ids = [n.id for n in model.spec.nodes]
    stripped = [n.removeprefix("nodes.")
                for n in as_patterns(names, what)]
    return match(ids, stripped, what=what)


def unique_id(base: str, taken: Iterable[str]) -> str:
    """``base``, or ``base_1``, ``base_2``, ... whichever is not in ``taken``."""
    taken = set(taken)
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy to edit (shared parameters stay shared within the copy)."""
    return copy.deepcopy(model)


def reference_tensor(model: nn.Module) -> Tensor | None:
    """The first floating parameter (or buffer): the model's device and dtype."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t
    return None


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """A context in which ``torch``'s CPU generator starts from ``seed`` (restored after)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def shapes_of(model: Network) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of each input and node of a built Network."""
    shapes = {i.name: tuple(i.shape) for i in model.spec.inputs}
    shapes.update({info.id: tuple(info.shape) for info in model.node_info()})
    return shapes


def under(prefixes: Iterable[str]) -> Callable[[str], bool]:
    """A predicate: the key lies under one of the node ids ``prefixes`` (``nodes.<id>.``)."""
    heads = tuple(f"nodes.{p}." for p in prefixes)
    return lambda key: key.startswith(heads)


def carry_state(
    old: nn.Module,
    new: nn.Module,
    *,
    reinit: Callable[[str], bool] = lambda key: False,
    fresh: Callable[[str], bool] = lambda key: False,
    dropped: Callable[[str], bool] = lambda key: False,
    adapt: Adapter | None = None,
) -> None:
    """Copy ``old``'s tensors into ``new`` by key.

    A ``reinit`` key keeps its initial value; so does a new key without an old tensor,
    which must satisfy ``fresh``;
    an old *parameter* left unused must satisfy ``dropped``; tensors of different shapes
    go through ``adapt``. Anything else is a :class:`ShapeError` naming the tensors.
    """
    old_state = old.state_dict()
    new_state = new.state_dict()
    used: set[str] = set()
    problems = []
    plan = []
    for key, target in new_state.items():
        if reinit(key):
            continue
        source = old_state.get(key)
        if source is None:
            if not fresh(key):
                problems.append(f"{key!r} has no counterpart in the original model")
            continue
        used.add(key)
        plan.append((key, source, target))
    params = {n for n, _ in old.named_parameters(remove_duplicate=False)}
    lost = sorted(k for k in params if k not in used and not dropped(k))
    problems += [f"the original {k!r} {tuple(old_state[k].shape)} has no place" for k in lost]
    if problems:
        raise ShapeError(f"the edit cannot take the weights: {'; '.join(problems[:4])}"
                         + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""))
    if next(iter(new_state.values()), torch.empty(0)).is_meta:
        return
    with torch.no_grad():
        for key, source, target in plan:
            if source.shape == target.shape:
                target.copy_(source)
            elif adapt is None or not adapt(key, source, target):
                raise ShapeError(f"{key!r}: the original {tuple(source.shape)} does not fit "
                                 f"the new {tuple(target.shape)}")


def carry_flags(old: nn.Module, new: nn.Module) -> None:
    """Give ``new`` ``old``'s ``requires_grad`` flags (by key) and training mode."""
    flags = {n: p.requires_grad for n, p in old.named_parameters(remove_duplicate=False)}
    for name, p in new.named_parameters():
        flag = flags.get(name)
        if flag is not None:
            p.requires_grad_(flag)
    new.train(old.training)


def rebuild(
    model: Network,
    spec: NetworkSpec | Mapping[str, Any],
    *,
    seed: int | None = None,
    reinit: Callable[[str], bool] = lambda key: False,
    fresh: Callable[[str], bool] = lambda key: False,
    dropped: Callable[[str], bool] = lambda key: False,
    adapt: Adapter | None = None,
) -> Network:
    """Build the edited ``spec`` where ``model`` lives and carry its weights, flags and mode.

    New tensors (``reinit``, ``fresh``: see :func:`carry_state`) are initialised as
    ``build(spec, seed=seed)`` would. Errors (invalid spec, shapes that do not fit, weights
    without a place) leave ``model`` as is.
    """
    spec = load_spec(spec)
    ref = reference_tensor(model)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else None
    new = build(spec, device=device, dtype=dtype, seed=seed)
    carry_state(model, new, reinit=reinit, fresh=fresh, dropped=dropped, adapt=adapt)
    carry_flags(model, new)
    return new


def spec_data(model: Network) -> dict[str, Any]:
    """``model.spec`` as plain, editable data."""
    return model.spec.to_dict()


def readers(data: Mapping[str, Any], node_id: str) -> list[str]:
    """Ids of the nodes of spec ``data`` that read ``node_id``."""
    return [n["id"] for n in data["nodes"] if node_id in n["inputs"]]
