"""Building a spec's nodes on the ``meta`` device: shape inference, one node at a time.

Each node's block is constructed on ``meta`` and run on meta tensors of its inputs'
shapes. What can go wrong is sorted into the user's mistakes — arguments a block
refuses (:class:`~netarchitect.errors.SpecError`), inputs of the wrong shape
(:class:`~netarchitect.errors.ShapeError`) — and bugs, which propagate unchanged
(with a note naming the node) instead of being dressed up as a user error.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import NetArchitectError, Problem
from .registry import get_block
from .spec import NetworkSpec, _thaw
from .spec_checks import CHANNEL_ARGS, block_signature, topological_order

__all__ = ["DTYPES", "PROBE_BATCH", "NodeInfo", "construct", "merge_tensors"]

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
PROBE_BATCH = 2  # >1 so batch-statistics layers accept the probe

#: Errors a block raises for arguments it refuses (user mistakes in the spec).
_ARGUMENT_ERRORS = (NetArchitectError, ValueError, TypeError)
#: Errors a forward raises for inputs it cannot take (shape or dtype mismatches).
_INPUT_ERRORS = (NetArchitectError, ValueError, IndexError, RuntimeError)


@dataclass(frozen=True)
class NodeInfo:
    """What the builder learned about one node: resolved params, output shape, parameter count."""

    id: str
    block: str
    params: dict[str, Any]
    shape: tuple[int, ...]
    num_params: int


@dataclass
class Construction:
    """The meta modules and infos of the nodes that built, and every problem found.

    ``argument_problems`` are blocks refusing their arguments (``SpecError``);
    ``shape_problems`` are inputs a block cannot take (``ShapeError``).
    """

    modules: dict[str, nn.Module]
    infos: dict[str, NodeInfo]
    argument_problems: list[Problem]
    shape_problems: list[Problem]

    @property
    def problems(self) -> list[Problem]:
        return self.argument_problems + self.shape_problems


def merge_tensors(xs: Sequence[Tensor], merge: str | None, merge_dim: int = 0) -> Tensor:
    """Combine a node's inputs: ``add``, ``mul``, ``concat`` (per-sample dim) or ``gate``."""
    if len(xs) == 1:
        return xs[0]
    if merge == "add":
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
    if merge == "mul":
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out
    if merge == "concat":
        dim = merge_dim + 1 if merge_dim >= 0 else merge_dim  # skip the batch dimension
        return torch.cat(list(xs), dim=dim)
    if merge == "gate":
        if len(xs) == 2:
            return xs[0] * torch.sigmoid(xs[1])
        a, b, g = xs
        t = torch.sigmoid(g)
        return t * a + (1 - t) * b
    raise ValueError(f"merge must be one of add, concat, mul, gate, args; got {merge!r}")


def node_arguments(xs: Sequence[Tensor], merge: str | None, merge_dim: int) -> list[Tensor]:
    """The positional arguments of a node's block: its merged input, or each input (``args``)."""
    if merge == "args":
        return list(xs)
    return [merge_tensors(xs, merge, merge_dim)]


def thaw_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A node's params as constructor keywords (lists become tuples)."""
    thawed = _thaw(params)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in thawed.items()}


def fill_channel_arg(cls: type[nn.Module], params: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Fill the block's first channel argument from the per-sample input ``shape``."""
    names = list(block_signature(cls)[0])
    if not names or names[0] not in CHANNEL_ARGS or names[0] in params or not shape:
        return
    params[names[0]] = shape[0] if names[0] == "in_channels" else shape[-1]


def merge_problem(shapes: list[tuple[int, ...]], merge: str | None, dim: int) -> str | None:
    """Why ``shapes`` cannot be merged, or ``None`` if they can."""
    if len(shapes) < 2 or merge == "args":
        return None
    if merge == "concat":
        ranks = {len(s) for s in shapes}
        if len(ranks) > 1:
            return f"concat of inputs with different ranks {shapes}"
        rank = ranks.pop()
        if not -rank <= dim < rank:
            return f"merge_dim={dim} is out of range for per-sample rank {rank}"
        d = dim % rank
        rest = {s[:d] + s[d + 1 :] for s in shapes}
        if len(rest) > 1:
            return f"concat along dim {dim} needs equal other dims, got {shapes}"
        return None
    try:
        torch.broadcast_shapes(*[(1, *s) for s in shapes])
    except RuntimeError:
        return f"{merge} of incompatible shapes {shapes}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _noted(exc: BaseException, note: str) -> BaseException:
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def _arity_problem(module: nn.Module, args: Sequence[Tensor]) -> str | None:
    """Why ``module.forward`` cannot take ``len(args)`` positional inputs, or ``None``."""
    try:
        inspect.signature(module.forward).bind(*args)
    except TypeError:
        return f"takes a different number of inputs than the {len(args)} given (merge: args)"
    except ValueError:  # pragma: no cover - forward without a signature
        return None
    return None


def probe_inputs(spec: NetworkSpec, dtype: torch.dtype | None) -> dict[str, Tensor]:
    """Meta tensors of the declared inputs (batch :data:`PROBE_BATCH`); ``float32`` inputs take
    the network's float ``dtype``, other declared dtypes are kept."""
    float_dtype = dtype or torch.get_default_dtype()
    values = {}
    for inp in spec.inputs:
        dt = DTYPES[inp.dtype]
        if dt == torch.float32:
            dt = float_dtype
        values[inp.name] = torch.empty((PROBE_BATCH, *inp.shape), device="meta", dtype=dt)
    return values


def construct(spec: NetworkSpec, dtype: torch.dtype | None) -> Construction:
    """Build every node on ``meta`` in topological order, inferring shapes; collect problems."""
    result = Construction({}, {}, [], [])
    order = topological_order(spec)
    if order is None:
        result.argument_problems.append(Problem("nodes", "the graph has a cycle"))
        return result
    node_index = {n.id: i for i, n in enumerate(spec.nodes)}
    values = probe_inputs(spec, dtype)
    for node_id in order:
        i = node_index[node_id]
        node = spec.nodes[i]
        if any(s not in values for s in node.inputs):
            continue  # an upstream node failed; its problem is already reported
        xs = [values[s] for s in node.inputs]
        why = merge_problem([tuple(x.shape[1:]) for x in xs], node.merge, node.merge_dim)
        if why:
            result.shape_problems.append(Problem(f"nodes[{i}].merge", why))
            continue
        args = node_arguments(xs, node.merge, node.merge_dim)
        cls = get_block(node.block)
        params = thaw_params(node.params)
        fill_channel_arg(cls, params, tuple(args[0].shape[1:]))
        try:
            module = cls(**params, device="meta", dtype=dtype)
        except _ARGUMENT_ERRORS as exc:
            result.argument_problems.append(
                Problem(f"nodes[{i}].params", f"block {node.block!r}: {_first_line(exc)}")
            )
            continue
        except Exception as exc:  # noqa: BLE001 (re-raised with the node named)
            raise _noted(exc, f"(internal error building nodes[{i}] {node.id!r}: {node.block})")
        arity = _arity_problem(module, args) if node.merge == "args" else None
        if arity:
            result.shape_problems.append(Problem(f"nodes[{i}].merge", f"block {node.block!r} {arity}"))
            continue
        y = _probe(module, args, node.block, i, result)
        if y is None:
            continue
        values[node_id] = y
        result.modules[node_id] = module
        n_params = sum(p.numel() for p in module.parameters())
        result.infos[node_id] = NodeInfo(node_id, node.block, params, tuple(y.shape[1:]), n_params)
    return result


def _probe(
    module: nn.Module, args: list[Tensor], block: str, i: int, result: Construction
) -> Tensor | None:
    """Run ``module`` on the meta ``args``; ``None`` (and a problem) if it cannot take them."""
    module.eval()
    shapes = ", ".join(str(tuple(a.shape[1:])) for a in args)
    try:
        with torch.no_grad():
            y = module(*args)
    except NotImplementedError as exc:
        raise _noted(exc, f"(internal error probing nodes[{i}]: {block})")
    except _INPUT_ERRORS as exc:
        result.shape_problems.append(
            Problem(f"nodes[{i}]", f"block {block!r} cannot take input of shape {shapes}: "
                                   f"{_first_line(exc)}")
        )
        return None
    except Exception as exc:  # noqa: BLE001 (re-raised with the node named)
        raise _noted(exc, f"(internal error probing nodes[{i}]: {block})")
    if not isinstance(y, Tensor):
        result.shape_problems.append(
            Problem(f"nodes[{i}].block", f"block {block!r} returns {type(y).__name__}, not a "
                                         "tensor; it cannot be used in a spec")
        )
        return None
    return y
