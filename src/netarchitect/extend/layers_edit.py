"""Remove layers (depth pruning) and insert layers (adapters) in any model.

On a spec-built Network, names are node ids (or globs over them): a removed node's
readers read its input instead, and an inserted node reads ``name`` while ``name``'s
readers read it. Shapes must still fit — a removal that would feed a node a tensor of
another shape is a :class:`~netarchitect.errors.ShapeError` naming both nodes — and the
roles (blocks, stages, features) follow the edit. On other modules, names are module
paths: an entry of an ``nn.Sequential``/``nn.ModuleList`` is deleted (a transformers
model's ``config.num_hidden_layers`` and layers' ``layer_idx`` follow), any other module
becomes ``nn.Identity``; an inserted module goes after ``name`` in its container, or
``name`` becomes ``nn.Sequential(name, module)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ShapeError, SpecError
from ..network import Network, infer_shapes
from ._edit import (
    Patterns,
    as_patterns,
    copy_model,
    is_spec_built,
    match,
    node_ids,
    readers,
    rebuild,
    shapes_of,
    spec_data,
    under,
    unique_id,
)

__all__ = ["insert_after", "remove_layers"]

_CONTAINERS = (nn.Sequential, nn.ModuleList)


def remove_layers(model: nn.Module, names: Patterns) -> nn.Module:
    """A copy of ``model`` without the layers ``names`` (ids/paths or globs)."""
    if is_spec_built(model):
        return _remove_nodes(model, node_ids(model, names, "remove"))  # type: ignore[arg-type]
    new = copy_model(model)
    all_names = [n for n, _ in new.named_modules() if n]
    chosen = match(all_names, as_patterns(names, "remove"), what="remove")
    chosen = [n for n in chosen if not any(n.startswith(f"{c}.") for c in chosen)]
    _check_module_shapes(new, chosen)
    for name in sorted(chosen, key=_index_key, reverse=True):  # later entries first
        _delete(new, name)
    _renumber(new)
    return new


# --------------------------------------------------------------------------- spec-built


def _fix_roles(roles: dict[str, Any], removed: set[str], source: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in roles.items():
        if key == "kind":
            out[key] = value
        elif isinstance(value, str):
            out[key] = source(value)
        elif isinstance(value, list):
            out[key] = [v for v in value if v not in removed]
        elif isinstance(value, Mapping):
            out[key] = {k: v for k, v in value.items() if k not in removed}
        else:  # pragma: no cover - roles hold names, lists and mappings
            out[key] = value
    return out


def _remove_nodes(model: Network, removed_ids: list[str]) -> Network:
    data = spec_data(model)
    removed = set(removed_ids)
    nodes = {n["id"]: n for n in data["nodes"]}
    for node_id in removed_ids:
        if len(nodes[node_id]["inputs"]) != 1:
            raise SpecError(f"cannot remove {node_id!r}: it reads {nodes[node_id]['inputs']}, "
                            "and only a node with one input can be bypassed", path="remove")

    def source(name: str) -> str:
        while name in removed:
            name = nodes[name]["inputs"][0]
        return name

    shapes = shapes_of(model)
    kept = [n for n in data["nodes"] if n["id"] not in removed]
    ends = [(n["id"], n["inputs"]) for n in kept] + [("the output", data["outputs"])]
    for reader, inputs in ends:
        for name in inputs:
            new = source(name)
            if new != name and shapes[new] != shapes[name]:
                raise ShapeError(
                    f"cannot remove {name!r}: {reader!r} would read {new!r} of shape "
                    f"{shapes[new]} instead of {shapes[name]}", path="remove")
    for n in kept:
        n["inputs"] = [source(s) for s in n["inputs"]]
    data["nodes"] = kept
    data["outputs"] = [source(o) for o in data["outputs"]]
    if "roles" in data:
        data["roles"] = _fix_roles(data["roles"], removed, source)
    if "tie" in data:
        data["tie"] = {t: s for t, s in data["tie"].items()
                       if t.split(".")[0] not in removed and s.split(".")[0] not in removed}
    return rebuild(model, data, dropped=under(removed))


# --------------------------------------------------------------------------- modules


def _index_key(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def _dims(module: nn.Module) -> tuple[int | None, int | None]:
    """(input features, output features) of a module, from its first and last leaves
    with sizes (``None`` where unknown)."""
    leaves = [m for m in module.modules() if _leaf_dims(m) != (None, None)]
    if not leaves:
        return None, None
    return _leaf_dims(leaves[0])[0], _leaf_dims(leaves[-1])[1]


def _leaf_dims(m: nn.Module) -> tuple[int | None, int | None]:
    for a, b in (("in_features", "out_features"), ("in_channels", "out_channels"),
                 ("embedding_dim", "embedding_dim")):
        if isinstance(getattr(m, a, None), int) and isinstance(getattr(m, b, None), int):
            return (getattr(m, a) if a != "embedding_dim" else None), getattr(m, b)
    size = getattr(m, "num_features", None)
    if isinstance(size, int):
        return size, size
    shape = getattr(m, "normalized_shape", None)
    if isinstance(shape, tuple) and len(shape) == 1:
        return shape[0], shape[0]
    return None, None


def _nearest(parent: nn.Module, keys: list[str], side: int) -> tuple[str, int] | None:
    """The first of ``keys`` (a container's entries, in the order to search) whose size on
    ``side`` (0: input, 1: output) is known, with that size."""
    for key in keys:
        size = _dims(parent.get_submodule(key))[side]
        if size is not None:
            return key, size
    return None


def _check_module_shapes(model: nn.Module, names: list[str]) -> None:
    """Refuse removals whose surviving neighbours' sizes do not fit."""
    gone = set(names)
    for name in names:
        parent, attr = _parent(model, name)
        if isinstance(parent, _CONTAINERS):
            keys = list(parent._modules)
            prefix = name[: len(name) - len(attr)]
            i = keys.index(attr)
            before = _nearest(parent, [k for k in keys[:i][::-1] if prefix + k not in gone], 1)
            after = _nearest(parent, [k for k in keys[i + 1:] if prefix + k not in gone], 0)
            if before and after:
                if before[1] != after[1]:
                    raise ShapeError(
                        f"cannot remove {name!r}: {prefix + before[0]!r} gives {before[1]} "
                        f"features but {prefix + after[0]!r} takes {after[1]}", path="remove")
                continue
        inp, out = _dims(model.get_submodule(name))
        if inp is not None and out is not None and inp != out:
            raise ShapeError(f"cannot remove {name!r}: it maps {inp} to {out} features, so "
                             "its input does not fit its reader", path="remove")


def _delete(model: nn.Module, name: str) -> None:
    parent, attr = _parent(model, name)
    if isinstance(parent, _CONTAINERS):
        kept = [m for k, m in parent._modules.items() if k != attr]
        if isinstance(parent, nn.ModuleList):
            parent._modules.clear()
            parent.extend(kept)
        else:
            keys = [k for k in parent._modules if k != attr]
            numeric = all(k.isdigit() for k in keys)
            parent._modules.clear()
            for i, (k, m) in enumerate(zip(keys, kept, strict=True)):
                parent.add_module(str(i) if numeric else k, m)
    else:
        setattr(parent, attr, nn.Identity())


def _renumber(model: nn.Module) -> None:
    """transformers: ``layer_idx`` of each layer and ``config.num_hidden_layers`` follow."""
    config = getattr(model, "config", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
            any(isinstance(getattr(m, "layer_idx", None), int) for m in layer.modules())
            for layer in module
        ):
            for i, layer in enumerate(module):
                for m in layer.modules():
                    if isinstance(getattr(m, "layer_idx", None), int):
                        m.layer_idx = i  # type: ignore[assignment]
            if config is not None and hasattr(config, "num_hidden_layers"):
                config.num_hidden_layers = len(module)


# --------------------------------------------------------------------------- insertion


def insert_after(
    model: nn.Module,
    name: str,
    module: nn.Module | Mapping[str, Any] | str,
    *,
    seed: int | None = None,
) -> nn.Module:
    """A copy of ``model`` with ``module`` inserted after the layer ``name``.

    On a spec-built Network ``module`` is a node description ``{"block": ..., "params":
    {...}, "id": ..., "context": [...]}`` (or a block name); its output must have
    ``name``'s shape (the readers' weights expect it), it is initialised as ``build(spec,
    seed=seed)`` would, and it joins ``name``'s roles when it is the same block (a
    Transformer block after a Transformer block). Elsewhere ``module`` is an ``nn.Module``.
    """
    if is_spec_built(model):
        return _insert_node(model, name, module, seed)  # type: ignore[arg-type]
    if not isinstance(module, nn.Module):
        raise SpecError(f"insert_after on a {type(model).__name__} takes an nn.Module, "
                        f"got {type(module).__name__}", path="module")
    new = copy_model(model)
    names = [n for n, _ in new.named_modules() if n]
    if name not in names:
        match(names, [name], what="insert_after")  # raises with the close names
    parent, attr = _parent(new, name)
    keys = list(parent._modules) if isinstance(parent, _CONTAINERS) else [attr]
    found = _nearest(parent, keys[: keys.index(attr) + 1][::-1], 1)  # the nearest sized layer
    out = found[1] if found else None
    inp = _dims(module)[0]
    if out is not None and inp is not None and out != inp:
        raise ShapeError(f"cannot insert {type(module).__name__} after {name!r}: the layers "
                         f"before give {out} features but it takes {inp}", path="module")
    if isinstance(parent, _CONTAINERS):
        keys = list(parent._modules)
        items = list(parent._modules.values())
        i = keys.index(attr) + 1
        items.insert(i, module)
        numeric = all(k.isdigit() for k in keys)
        keys.insert(i, str(i) if numeric else unique_id(f"{attr}_after", keys))
        parent._modules.clear()
        for j, (k, m) in enumerate(zip(keys, items, strict=True)):
            parent.add_module(str(j) if numeric else k, m)
        _renumber(new)
    else:
        setattr(parent, attr, nn.Sequential(parent.get_submodule(attr), module))
    return new


def _node_description(module: Any) -> dict[str, Any]:
    if isinstance(module, str):
        return {"block": module}
    if isinstance(module, Mapping) and isinstance(module.get("block"), str):
        unknown = set(module) - {"id", "block", "params", "context"}
        if unknown:
            raise SpecError(f"unknown key(s) {sorted(unknown)} in the node to insert",
                            path="module")
        return dict(module)
    raise SpecError(
        f"a spec-built model takes a node description {{'block': ..., 'params': {{...}}}} "
        f"to insert, not {type(module).__name__} (a module instance cannot be written in a "
        "spec)", path="module")


def _insert_node(model: Network, name: str, module: Any, seed: int | None) -> Network:
    desc = _node_description(module)
    data = spec_data(model)
    if any(c in name for c in "*?["):
        raise SpecError(f"insert_after takes one node id, not the glob {name!r}",
                        path="insert_after")
    target = node_ids(model, [name], "insert_after")[0]
    nodes = {n["id"]: n for n in data["nodes"]}
    old = nodes[target]
    new_id = desc.pop("id", None) or unique_id(f"{target}_{desc['block']}", nodes)
    if new_id in nodes:
        raise SpecError(f"node id {new_id!r} is taken", path="module.id")
    node = {"id": new_id, "block": desc["block"], "params": desc.get("params", {}),
            "inputs": [target]}
    same_block = desc["block"] == old["block"]
    context = desc.get("context", old.get("context") if same_block else None)
    if context:
        node["context"] = context
    for reader in readers(data, target):
        nodes[reader]["inputs"] = [new_id if s == target else s for s in nodes[reader]["inputs"]]
    data["outputs"] = [new_id if o == target else o for o in data["outputs"]]
    i = data["nodes"].index(old)
    data["nodes"].insert(i + 1, node)
    if "roles" in data:
        data["roles"] = _join_roles(data["roles"], target, new_id, same_block)
    try:
        shapes = infer_shapes(data)
    except SpecError as exc:
        raise ShapeError(f"cannot insert {desc['block']!r} after {target!r}: {exc}",
                         path="module") from None
    if tuple(shapes[new_id]) != tuple(shapes[target]):
        raise ShapeError(
            f"cannot insert {desc['block']!r} after {target!r}: it gives {tuple(shapes[new_id])} "
            f"but the readers of {target!r} take {tuple(shapes[target])}", path="module")
    return rebuild(model, data, seed=seed, fresh=under([new_id]))


def _join_roles(roles: dict[str, Any], target: str, new_id: str, same: bool) -> dict[str, Any]:
    out = dict(roles)
    if out.get("features") == target:
        out["features"] = new_id
    for key, value in roles.items():
        if same and isinstance(value, list) and target in value:
            value = list(value)
            value.insert(value.index(target) + 1, new_id)
            out[key] = value
        elif same and isinstance(value, Mapping) and target in value and key == "reductions":
            out[key] = {**value, new_id: value[target]}
    return out
