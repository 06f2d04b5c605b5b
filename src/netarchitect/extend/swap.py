"""Swap every module of one type for another: BatchNorm -> GroupNorm, GELU -> SiLU, ...

``from_type`` is a class (its subclasses match too), a tuple of classes, or a layer name
(``"batchnorm2d"``: exactly that registered class). ``to`` is a layer type as blocks take
it — a name or a mapping with arguments (``{"name": "groupnorm", "num_groups": 8}``) — or,
on modules that are not spec-built, a callable ``factory(old_module) -> new_module``.

With ``weights="carry"`` (default) each replaced module's parameters move into the
same-named parameters of its replacement (BatchNorm's affine ``weight``/``bias`` become
GroupNorm's); a parameter without a place of the same shape is an error naming it (the
model is untouched). ``weights="init"`` keeps the replacement's own weights.

On a spec-built Network the swap is a spec edit: each ``*_layer`` parameter (given, or a
block's default) naming a matching layer, and each node whose block matches, now name
``to``; old arguments the new layer also takes (``eps``) are kept.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..errors import RegistryError, ShapeError, SpecError, suggest
from ..layers._factory import canonical_name, resolve_layer
from ..network import Network, build
from ..registry import get_block, layer_table
from ._edit import carry_state, copy_model, is_spec_built, rebuild, reference_tensor, spec_data

__all__ = ["swap_modules"]

_KINDS = ("norm", "act", "mlp")
_WEIGHTS = ("carry", "init")
LayerSpec = str | Mapping[str, Any]
Factory = Callable[[nn.Module], nn.Module]


def swap_modules(
    model: nn.Module,
    from_type: type | tuple[type, ...] | str,
    to: LayerSpec | Factory,
    *,
    weights: str = "carry",
) -> nn.Module:
    """A copy of ``model`` with every ``from_type`` module replaced by ``to`` (see the
    module doc); the input model is left as it is."""
    if weights not in _WEIGHTS:
        raise SpecError(f"weights={weights!r} must be one of {', '.join(_WEIGHTS)}",
                        path="weights")
    matches = _predicate(from_type)
    found = [n for n, m in model.named_modules() if n and matches(type(m))]
    if not found:
        present = sorted({type(m).__name__ for m in model.modules()})
        raise SpecError(f"{type(model).__name__} has no {_describe(from_type)} module to swap"
                        f"{suggest(_describe(from_type), present)}", path="from_type")
    if is_spec_built(model):
        if callable(to) and not isinstance(to, (str, Mapping)):
            raise SpecError("a spec-built model is swapped by a spec edit: give `to` as a "
                            "layer name or {'name': ..., **arguments}, not a callable",
                            path="to")
        return _swap_spec(model, matches, to, weights, found)  # type: ignore[arg-type]
    new = copy_model(model)
    for name, old in [(n, m) for n, m in new.named_modules() if n in found]:
        if any(name.startswith(f"{f}.") for f in found):
            continue  # inside a module that is replaced as a whole
        parent_name, _, attr = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        replacement = to(old) if callable(to) and not isinstance(to, str) else _make(to, old)
        ref = reference_tensor(old)
        if ref is not None:
            replacement.to(device=ref.device, dtype=ref.dtype)
        if weights == "carry":
            _carry(old, replacement, name)
        replacement.train(old.training)
        setattr(parent, attr, replacement)
    return new


def _describe(from_type: Any) -> str:
    if isinstance(from_type, str):
        return from_type
    if isinstance(from_type, tuple):
        return "/".join(t.__name__ for t in from_type)
    return from_type.__name__


def _class_of(name: str) -> type | None:
    for kind in _KINDS:
        table = {canonical_name(k): v for k, v in layer_table(kind).items()}
        if canonical_name(name) in table:
            return table[canonical_name(name)]
    try:
        return get_block(name)
    except RegistryError:
        return None


def _predicate(from_type: Any) -> Callable[[type], bool]:
    if isinstance(from_type, str):
        cls = _class_of(from_type)
        if cls is None:
            known = [n for k in _KINDS for n in layer_table(k)]
            raise SpecError(f"unknown layer {from_type!r}{suggest(from_type, known)}",
                            path="from_type")
        return lambda t: t is cls
    types = from_type if isinstance(from_type, tuple) else (from_type,)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise SpecError(f"from_type must be a module class or a layer name, got {from_type!r}",
                        path="from_type")
    return lambda t: issubclass(t, types)


def _target(to: LayerSpec) -> tuple[str, str, dict[str, Any]]:
    """``(kind, name, arguments)`` of a layer type ``to``."""
    name = to if isinstance(to, str) else to.get("name") if isinstance(to, Mapping) else None
    if not isinstance(name, str):
        raise SpecError(f"`to` must be a layer name or {{'name': ..., **arguments}}, got {to!r}",
                        path="to")
    kwargs = {} if isinstance(to, str) else {k: v for k, v in to.items() if k != "name"}
    for kind in _KINDS:
        if canonical_name(name) in {canonical_name(k) for k in layer_table(kind)}:
            return kind, name, kwargs
    known = [n for k in _KINDS for n in layer_table(k)]
    raise SpecError(f"unknown layer {name!r}{suggest(name, known)}", path="to")


def _channels(old: nn.Module) -> int:
    for attr in ("num_features", "num_channels", "in_channels"):
        value = getattr(old, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(old, "normalized_shape", None)
    if isinstance(shape, tuple) and shape:
        return int(shape[-1])
    weight = getattr(old, "weight", None)
    if isinstance(weight, nn.Parameter) and weight.dim() == 1:
        return int(weight.shape[0])
    raise SpecError(f"cannot tell the channels of {type(old).__name__} to build a norm for it",
                    path="to")


def _make(to: LayerSpec, old: nn.Module) -> nn.Module:
    kind, name, kwargs = _target(to)
    size = _channels(old) if kind == "norm" else None
    try:
        ctor = resolve_layer({"name": name, **kwargs}, layer_table(kind), kind=kind)
        return ctor(size) if size is not None else ctor()
    except TypeError as exc:  # an argument the layer does not take
        raise SpecError(f"cannot build {name!r} for {type(old).__name__}: {exc}",
                        path="to") from None


def _carry(old: nn.Module, new: nn.Module, name: str) -> None:
    try:
        carry_state(old, new, fresh=lambda key: True)
    except ShapeError as exc:
        raise ShapeError(f"{name}: {type(new).__name__} cannot take the weights of "
                         f"{type(old).__name__} ({exc}); pass weights='init' to start it "
                         "afresh", path="to") from None


# --------------------------------------------------------------------------- spec-built


def _layer_value(value: Any, kind: str, to: LayerSpec) -> Any:
    """The spec value for layer type ``to`` replacing ``value`` (keeping its accepted args)."""
    _, name, kwargs = _target(to)
    old_args = {k: v for k, v in value.items() if k != "name"} if isinstance(value, Mapping) else {}
    cls = layer_table(kind)[next(k for k in layer_table(kind)
                                 if canonical_name(k) == canonical_name(name))]
    accepted = inspect.signature(cls.__init__).parameters
    merged = {k: v for k, v in old_args.items() if k in accepted}
    merged.update(kwargs)
    return {"name": name, **merged} if merged else name


def _resolved_class(value: Any, kind: str) -> type | None:
    name = value.get("name") if isinstance(value, Mapping) else value
    if not isinstance(name, str):
        return None
    table = {canonical_name(k): v for k, v in layer_table(kind).items()}
    return table.get(canonical_name(name))


def _edit_params(params: dict[str, Any], block: str | None, matches: Callable[[type], bool],
                 kind: str, to: LayerSpec) -> None:
    for key, value in list(params.items()):
        if key.endswith(f"{kind}_layer"):  # norm_layer, conv_norm_layer, ...
            cls = _resolved_class(value, kind)
            if cls is not None and matches(cls):
                params[key] = _layer_value(value, kind, to)
        elif isinstance(value, dict):
            _edit_params(value, None, matches, kind, to)
    if block is None:
        return
    signature = inspect.signature(get_block(block).__init__).parameters
    key = f"{kind}_layer"
    default = signature[key].default if key in signature else None
    if key not in params and isinstance(default, str):
        cls = _resolved_class(default, kind)
        if cls is not None and matches(cls):
            params[key] = _layer_value(default, kind, to)


def _swap_spec(model: Network, matches: Callable[[type], bool], to: LayerSpec, weights: str,
               found: list[str]) -> Network:
    kind, name, _ = _target(to)
    kinds = [k for k in _KINDS if any(matches(c) for c in layer_table(k).values())]
    if kinds and kind not in kinds:
        raise SpecError(f"cannot swap {kinds[0]} layers for the {kind} layer {name!r}: a spec "
                        f"names them in {kinds[0]}_layer arguments", path="to")
    data = spec_data(model)
    for node in data["nodes"]:
        params = node.setdefault("params", {})
        if matches(get_block(node["block"])):
            value = _layer_value(params, kind, to)
            node["block"] = value if isinstance(value, str) else value.pop("name")
            node["params"] = {} if isinstance(value, str) else value
        else:
            _edit_params(params, node["block"], matches, kind, to)
    left = [n for n, m in build(data, device="meta").named_modules() if n and matches(type(m))]
    if left:
        raise SpecError(f"cannot swap {', '.join(left[:3])}: built inside blocks without a "
                        f"{kind}_layer argument, so the spec cannot name the new layer",
                        path="from_type")
    swapped = tuple(f"{n}." for n in found)
    inside: Callable[[str], bool] = lambda key: key.startswith(swapped)
    try:
        dropped = inside if weights == "init" else (lambda key: False)
        return rebuild(model, data, fresh=inside, dropped=dropped)
    except ShapeError as exc:
        raise ShapeError(f"{exc}; pass weights='init' to start the new layers afresh",
                         path="to") from None
