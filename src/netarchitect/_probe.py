"""Building a spec's nodes on the ``meta`` device: shape inference, one node at a time.

Each node's block is constructed on ``meta`` and run on meta tensors of its inputs'
shapes. What can go wrong is sorted into the user's mistakes — arguments a block
refuses (:class:`~netarchitect.errors.SpecError`), inputs of the wrong shape
(:class:`~netarchitect.errors.ShapeError`) — and bugs, which propagate unchanged
(with a note naming the node) instead of being dressed up as a user error.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

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
#: What torch says when a block makes a tensor of a size it was given but did not check.
_SIZE_ERROR = re.compile(r"negative dimension|overflow|numel|Storage size|cannot be converted")


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
    if len({len(s) for s in shapes}) > 1:  # the batch dimension would broadcast too
        return f"{merge} of inputs with different ranks {shapes}"
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return f"{merge} of incompatible shapes {shapes}"
    return None


_aten = torch.ops.aten
#: Operators whose CPU kernels exist for floating-point inputs only.
_FLOAT_ONLY = frozenset({
    _aten.gelu, _aten.silu, _aten.mish, _aten.elu, _aten.leaky_relu, _aten.hardswish,
    _aten.hardsigmoid, _aten.softplus, _aten.glu, _aten._softmax, _aten._log_softmax,
    _aten.native_layer_norm, _aten.native_group_norm, _aten.native_batch_norm,
    _aten._native_batch_norm_legit, _aten._native_batch_norm_legit_no_training,
    _aten._native_batch_norm_legit_functional, _aten._fused_rms_norm, _aten.mean, _aten.var,
    _aten.var_mean, _aten.std, _aten.std_mean, _aten.native_dropout, _aten.bernoulli_,
    _aten._prelu_kernel, _aten.upsample_nearest1d, _aten.upsample_nearest2d,
    _aten.upsample_nearest3d, _aten.upsample_bilinear2d, _aten.upsample_linear1d,
    _aten.adaptive_max_pool2d, _aten._adaptive_avg_pool2d, _aten.adaptive_avg_pool2d,
    _aten._adaptive_avg_pool3d, _aten.avg_pool3d,
})
#: Operators whose CPU kernels need every tensor argument in one dtype.
_SAME_DTYPE = frozenset({
    _aten.mm, _aten.addmm, _aten.bmm, _aten.baddbmm, _aten.addmv, _aten.mv, _aten.dot,
    _aten.convolution, _aten._convolution,
})
#: Normalisations: parameters in the input's dtype, or float32 for a 16-bit input.
_NORMS = frozenset({
    _aten.native_layer_norm, _aten.native_group_norm, _aten.native_batch_norm,
    _aten._native_batch_norm_legit, _aten._native_batch_norm_legit_no_training,
    _aten._native_batch_norm_legit_functional,
})
#: Operators whose CPU kernels refuse inputs of some non-float dtypes.
_BOOL = frozenset({torch.bool})
_REFUSED: dict[Any, frozenset[torch.dtype]] = {
    **dict.fromkeys(
        (_aten.relu, _aten.abs, _aten.neg, _aten.sub, _aten.rsub, _aten.sign,
         _aten.max_pool2d_with_indices, _aten.max_pool2d, _aten.max_pool1d), _BOOL
    ),
    **dict.fromkeys(
        (_aten.avg_pool2d, _aten.avg_pool1d),
        frozenset({torch.bool, torch.int32, torch.int16, torch.int8, torch.uint8}),
    ),
}
_HALF = (torch.float16, torch.bfloat16)


def cpu_dtype_problem(op: Any, tensors: list[Tensor]) -> str | None:
    """Why the CPU kernel of ``op`` would refuse ``tensors``' dtypes, or ``None``."""
    if not tensors:
        return None
    first = tensors[0].dtype
    if op in _FLOAT_ONLY and not tensors[0].is_floating_point():
        return f"{op.__name__} is not implemented for {first} inputs (floating point only)"
    if first in _REFUSED.get(op, ()):
        return f"{op.__name__} is not implemented for {first} inputs"
    if op in _SAME_DTYPE and len({t.dtype for t in tensors}) > 1:
        dtypes = ", ".join(sorted(str(t.dtype) for t in tensors))
        return f"{op.__name__} needs one dtype for all its tensors, got {dtypes}"
    if op in _NORMS:
        for t in tensors[1:]:
            if t.is_floating_point() and t.dtype != first and not (
                first in _HALF and t.dtype == torch.float32
            ):
                return f"{op.__name__} of a {first} input needs {first} parameters, got {t.dtype}"
    return None


_CHECKED = _FLOAT_ONLY | _SAME_DTYPE | _NORMS | frozenset(_REFUSED)  # + convolution shapes


_RANDOM_FILLS = frozenset(
    getattr(torch.ops.aten, name)
    for name in ("normal_", "uniform_", "bernoulli_", "exponential_", "random_", "log_normal_",
                 "cauchy_", "geometric_")
)


class SkipMetaRandomFills(TorchDispatchMode):
    """In-place random initialisers of meta tensors do nothing: there are no values to fill,
    and torch runs them through Python reference kernels (the first one also imports
    ``torch._dynamo``, about a second). Building every node on meta is much faster."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.overloadpacket in _RANDOM_FILLS and isinstance(args[0], Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


class CpuKernelRules(TorchDispatchMode):
    """Meta kernels skip most dtype checks (``linear`` of int64 ids and float weights runs on
    meta) and the channel check of transposed convolutions; this mode applies the CPU
    kernels' rules during the probe, so a spec that cannot run is refused at build time
    instead of in its first forward."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        op = func.overloadpacket
        if op in _CHECKED:
            tensors = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, Tensor)]
            why = cpu_dtype_problem(op, tensors)
            if why:
                raise RuntimeError(why)
        if op is _aten.convolution and args[6]:  # meta skips the channel check of transposed
            x, weight = args[0], args[1]
            if x.dim() > 1 and x.shape[1] != weight.shape[0]:
                raise RuntimeError(f"transposed convolution of weight {tuple(weight.shape)} "
                                   f"expects {weight.shape[0]} input channels, got {x.shape[1]}")
        return func(*args, **(kwargs or {}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _noted(exc: BaseException, note: str) -> BaseException:
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def _arity_problem(module: nn.Module, args: Sequence[Tensor], *, spread: bool) -> str | None:
    """Why ``module.forward`` cannot take the ``args`` tensors as positional inputs, or
    ``None``: the call must bind, and (``spread``: ``merge: args``) the parameters they land
    in must be tensors (by annotation; unannotated ones are assumed to be)."""
    try:
        signature = inspect.signature(module.forward)
        bound = signature.bind(*args)
    except TypeError:
        how = " (merge: args)" if spread else ""
        return f"takes a different number of inputs than the {len(args)} given{how}"
    except ValueError:  # pragma: no cover - forward without a signature
        return None
    if not spread:
        return None
    for name in bound.arguments:
        annotation = signature.parameters[name].annotation
        if annotation is not inspect.Parameter.empty and "Tensor" not in str(annotation):
            return f"takes {name!r} ({annotation}) where merge: args passes a tensor"
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
    # a node like one already probed (same block, arguments and input shapes: the repeated
    # blocks of a deep model) gets that node's output shape without running again
    probed: dict[tuple[Any, ...], tuple[torch.Size, torch.dtype]] = {}
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
            with SkipMetaRandomFills():
                module = cls(**params, device="meta", dtype=dtype)
        except Exception as exc:  # noqa: BLE001 (sorted into user errors and bugs)
            if not isinstance(exc, _ARGUMENT_ERRORS) and not (
                isinstance(exc, RuntimeError) and _SIZE_ERROR.search(str(exc))
            ):
                raise _noted(exc, f"(internal error building nodes[{i}] {node.id!r}: {node.block})")
            result.argument_problems.append(
                Problem(f"nodes[{i}].params", f"block {node.block!r}: {_first_line(exc)}")
            )
            continue
        key = (node.block, repr(params), node.merge,
               tuple((tuple(a.shape), a.dtype) for a in args))
        if key in probed:
            shape, out_dtype = probed[key]
            y = torch.empty(shape, dtype=out_dtype, device="meta")
        else:
            arity = _arity_problem(module, args, spread=node.merge == "args")
            if arity:
                where = f"nodes[{i}].merge" if node.merge == "args" else f"nodes[{i}].inputs"
                result.shape_problems.append(Problem(where, f"block {node.block!r} {arity}"))
                continue
            y = _probe(module, args, node.block, i, result)
            if y is None:
                continue
            probed[key] = (y.shape, y.dtype)
        values[node_id] = y
        result.modules[node_id] = module
        n_params = sum(p.numel() for p in module.parameters())
        result.infos[node_id] = NodeInfo(node_id, node.block, params, tuple(y.shape[1:]), n_params)
    return result


def _probe(
    module: nn.Module, args: list[Tensor], block: str, i: int, result: Construction
) -> Tensor | None:
    """Run ``module`` on the meta ``args`` (in eval mode, restored after); ``None`` (and a
    problem) if it cannot take them."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    shapes = ", ".join(f"{tuple(a.shape[1:])} {str(a.dtype).removeprefix('torch.')}" for a in args)
    try:
        with torch.no_grad(), CpuKernelRules():
            y = module(*args)
    except NotImplementedError as exc:
        if "Meta" in str(exc):  # a missing meta kernel, not the user's input
            raise _noted(exc, f"(internal error probing nodes[{i}]: {block})")
        result.shape_problems.append(
            Problem(f"nodes[{i}]", f"block {block!r} cannot take input {shapes}: {_first_line(exc)}")
        )
        return None
    except _INPUT_ERRORS as exc:
        result.shape_problems.append(
            Problem(f"nodes[{i}]", f"block {block!r} cannot take input {shapes}: "
                                   f"{_first_line(exc)}")
        )
        return None
    except Exception as exc:  # noqa: BLE001 (re-raised with the node named)
        raise _noted(exc, f"(internal error probing nodes[{i}]: {block})")
    finally:
        for m, training in modes:
            m.training = training
    if not isinstance(y, Tensor):
        result.shape_problems.append(
            Problem(f"nodes[{i}].block", f"block {block!r} returns {type(y).__name__}, not a "
                                         "tensor; it cannot be used in a spec")
        )
        return None
    return y
