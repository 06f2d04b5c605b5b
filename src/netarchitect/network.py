"""Turn a :class:`~netarchitect.spec.NetworkSpec` into an executable ``nn.Module``.

Blocks are first constructed on the ``meta`` device, where shapes are inferred
and the size of the weights is checked; only then are real tensors allocated
(``to_empty``) and initialised from the seed (:mod:`netarchitect.init`). That
one path makes CPU builds and meta-then-materialise builds bit-identical.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import BudgetError, Problem, ShapeError, SpecError
from .registry import get_block, suggest
from .spec import NetworkSpec, load_spec
from .spec_checks import CHANNEL_ARGS, block_signature, topological_order

__all__ = ["Network", "NodeInfo", "available_memory", "build", "infer_shapes", "merge_tensors"]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
_META_BATCH = 2  # >1 so batch-statistics layers accept the probe


@dataclass(frozen=True)
class NodeInfo:
    """What the builder learned about one node: resolved params, output shape, parameter count."""

    id: str
    block: str
    params: dict[str, Any]
    shape: tuple[int, ...]
    num_params: int


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
    raise ValueError(f"merge must be one of add, concat, mul, gate; got {merge!r}")


def _fill_channel_arg(cls: type[nn.Module], params: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Fill the block's first channel argument from the per-sample input ``shape``."""
    names = list(block_signature(cls)[0])
    if not names or names[0] not in CHANNEL_ARGS or names[0] in params or not shape:
        return
    params[names[0]] = shape[0] if names[0] == "in_channels" else shape[-1]


def _merge_problem(node_id: str, shapes: list[tuple[int, ...]], merge: str | None, dim: int) -> str | None:
    """Why ``shapes`` cannot be merged, or ``None`` if they can."""
    if len(shapes) < 2:
        return None
    if merge == "concat":
        ranks = {len(s) for s in shapes}
        if len(ranks) > 1:
            return f"concat of inputs with different ranks {shapes}"
        rank = ranks.pop()
        if not -rank <= dim < rank:
            return f"merge_dim={dim} is out of range for per-sample rank {rank}"
        d = dim % rank
        rest = {s[:d] + s[d + 1:] for s in shapes}
        if len(rest) > 1:
            return f"concat along dim {dim} needs equal other dims, got {shapes}"
        return None
    try:
        torch.broadcast_shapes(*[(1, *s) for s in shapes])
    except RuntimeError:
        return f"{merge} of incompatible shapes {shapes}"
    return None


def _construct(spec: NetworkSpec, dtype: torch.dtype | None) -> tuple[dict[str, nn.Module], dict[str, NodeInfo], list[Problem]]:
    """Build every node on ``meta`` in topological order, inferring shapes; collect problems."""
    order = topological_order(spec)
    if order is None:
        return {}, {}, [Problem("nodes", "the graph has a cycle")]
    node_index = {n.id: i for i, n in enumerate(spec.nodes)}
    float_dtype = dtype or torch.get_default_dtype()
    values: dict[str, Tensor] = {}
    for inp in spec.inputs:
        dt = _DTYPES[inp.dtype]
        if dt.is_floating_point:
            dt = float_dtype
        values[inp.name] = torch.empty((_META_BATCH, *inp.shape), device="meta", dtype=dt)
    modules: dict[str, nn.Module] = {}
    infos: dict[str, NodeInfo] = {}
    problems: list[Problem] = []
    for node_id in order:
        i = node_index[node_id]
        node = spec.nodes[i]
        if any(s not in values for s in node.inputs):
            continue  # an upstream node failed; its problem is already reported
        xs = [values[s] for s in node.inputs]
        why = _merge_problem(node_id, [tuple(x.shape[1:]) for x in xs], node.merge, node.merge_dim)
        if why:
            problems.append(Problem(f"nodes[{i}].merge", why))
            continue
        x = merge_tensors(xs, node.merge, node.merge_dim)
        cls = get_block(node.block)
        params = dict(_thaw_params(node.params))
        _fill_channel_arg(cls, params, tuple(x.shape[1:]))
        try:
            module = cls(**params, device="meta", dtype=dtype)
        except Exception as exc:  # noqa: BLE001 (a block rejecting its arguments, however it says so)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(Problem(f"nodes[{i}].params", f"block {node.block!r}: {msg}"))
            continue
        module.eval()
        try:
            with torch.no_grad():
                y = module(x)
        except Exception as exc:  # noqa: BLE001 (any failure here: a shape/dtype mismatch)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(Problem(f"nodes[{i}]", f"block {node.block!r} cannot take input of shape {tuple(x.shape[1:])}: {msg}"))
            continue
        if not isinstance(y, Tensor):
            problems.append(Problem(f"nodes[{i}].block", f"block {node.block!r} returns {type(y).__name__}, not a tensor; it cannot be used in a spec"))
            continue
        values[node_id] = y
        modules[node_id] = module
        n_params = sum(p.numel() for p in module.parameters())
        infos[node_id] = NodeInfo(node_id, node.block, params, tuple(y.shape[1:]), n_params)
    return modules, infos, problems


def _thaw_params(params: Mapping[str, Any]) -> dict[str, Any]:
    from .spec import _thaw

    thawed = _thaw(params)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in thawed.items()}


def infer_shapes(spec: NetworkSpec | Mapping[str, Any] | str | Path, *, dtype: torch.dtype | None = None) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of every input and node, computed on ``meta`` (no weights allocated)."""
    spec = load_spec(spec)
    _, infos, problems = _construct(spec, dtype)
    if problems:
        raise ShapeError(problems=problems)
    shapes = {i.name: tuple(i.shape) for i in spec.inputs}
    shapes.update({k: v.shape for k, v in infos.items()})
    return shapes


def available_memory() -> int:
    """Physical memory of this machine in bytes (the ceiling for weights built here)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


class Network(nn.Module):
    """An ``nn.Module`` executing a spec's DAG in topological order.

    ``forward(*inputs, return_nodes=None, **named_inputs)`` returns the single
    output tensor, a tuple for several outputs, or — with ``return_nodes`` — a
    dict of the named nodes' outputs (feature extraction).

    Shapes:
        Each input: ``(B, *spec.inputs[k].shape)``; outputs as in :meth:`node_info`.
    """

    def __init__(self, spec: NetworkSpec | Mapping[str, Any] | str | Path, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, seed: int | None = None, max_bytes: int | None = None) -> None:
        super().__init__()
        spec = load_spec(spec)
        modules, infos, problems = _construct(spec, dtype)
        if problems:
            raise ShapeError(problems=problems)
        self._spec = spec
        self._infos = infos
        self._order = [n for n in topological_order(spec) or []]
        self._node_specs = {n.id: n for n in spec.nodes}
        self._input_names = [i.name for i in spec.inputs]
        self.nodes = nn.ModuleDict({nid: modules[nid] for nid in self._order})
        device = torch.device(device) if device is not None else torch.device("cpu")
        if device.type != "meta":
            self._check_size(max_bytes)
            from .init import InitPolicy, materialize

            policy = InitPolicy.from_config(spec.init) if spec.init else None
            materialize(self, device, seed=seed, policy=policy)

    def _check_size(self, max_bytes: int | None) -> None:
        total = sum(t.numel() * t.element_size() for t in [*self.parameters(), *self.buffers()])
        limit = available_memory() if max_bytes is None else max_bytes
        if total > limit:
            raise BudgetError(
                f"spec {self._spec.name!r} needs {total / 2**30:.2f} GiB of weights, more than the "
                f"{limit / 2**30:.2f} GiB available; build it on device='meta' to analyse it"
            )

    @property
    def spec(self) -> NetworkSpec:
        """The spec this network was built from (``build(model.spec)`` rebuilds it)."""
        return self._spec

    def node_info(self) -> list[NodeInfo]:
        """Resolved parameters, output shape and parameter count of each node, in execution order."""
        return [self._infos[n] for n in self._order]

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Tensor]:
        if len(args) > len(self._input_names):
            raise TypeError(f"{self._spec.name}: expected {len(self._input_names)} input(s) {self._input_names}, got {len(args)}")
        values = dict(zip(self._input_names, args, strict=False))
        for name, value in kwargs.items():
            if name not in self._input_names:
                raise TypeError(f"{self._spec.name}: unknown input {name!r}{suggest(name, self._input_names)}")
            values[name] = value
        missing = [n for n in self._input_names if n not in values]
        if missing:
            raise TypeError(f"{self._spec.name}: missing input(s) {missing}")
        return values

    def _run_node(self, node_id: str, module: nn.Module, x: Tensor) -> Tensor:
        """Run one node on its merged input (subclasses hook in here, e.g. checkpointing)."""
        return module(x)

    def _execute(
        self, values: dict[str, Tensor], node_ids: Sequence[str], keep: Sequence[str]
    ) -> dict[str, Tensor]:
        """Run ``node_ids`` (in execution order) on ``values``, adding each node's output and
        dropping every value not in ``keep`` once its last reader has run (so inference
        holds only live activations, as a hand-written ``forward`` would)."""
        releases = self._release_plan(tuple(node_ids), frozenset(keep))
        for node_id, release in zip(node_ids, releases, strict=True):
            node = self._node_specs[node_id]
            x = merge_tensors([values[s] for s in node.inputs], node.merge, node.merge_dim)
            values[node_id] = self._run_node(node_id, self.nodes[node_id], x)
            del x
            for name in release:
                del values[name]
        return values

    def _release_plan(self, node_ids: tuple[str, ...], keep: frozenset[str]) -> list[tuple[str, ...]]:
        """For each node of ``node_ids``, the values (not in ``keep``) it is the last to read."""
        cache = self.__dict__.setdefault("_release_cache", {})
        if (node_ids, keep) not in cache:
            last_reader: dict[str, int] = {}
            for i, node_id in enumerate(node_ids):
                for name in self._node_specs[node_id].inputs:
                    last_reader[name] = i
            plan: list[list[str]] = [[] for _ in node_ids]
            for name, i in last_reader.items():
                if name not in keep:
                    plan[i].append(name)
            cache[(node_ids, keep)] = [tuple(p) for p in plan]
        return cache[(node_ids, keep)]

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], wanted: Sequence[str]) -> dict[str, Tensor]:
        """Bind the inputs, check the ``wanted`` node names and run what they need."""
        values = self._bind(args, kwargs)
        known = set(self._order) | set(self._input_names)
        for name in wanted:
            if name not in known:
                raise SpecError(f"unknown node {name!r}{suggest(name, known)}", path="return_nodes")
        return self._execute(values, self._needed(tuple(wanted)), wanted)

    def forward(self, *args: Tensor, return_nodes: Sequence[str] | None = None, **kwargs: Tensor) -> Any:
        wanted = list(return_nodes) if return_nodes is not None else list(self._spec.outputs)
        values = self._run(args, kwargs, wanted)
        if return_nodes is not None:
            return {name: values[name] for name in wanted}
        outs = [values[o] for o in self._spec.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _needed(self, wanted: tuple[str, ...]) -> list[str]:
        """Nodes (in execution order) that the ``wanted`` outputs depend on."""
        cache = self.__dict__.setdefault("_needed_cache", {})
        if wanted not in cache:
            need = set(wanted)
            for node_id in reversed(self._order):
                if node_id in need:
                    need.update(self._node_specs[node_id].inputs)
            cache[wanted] = [n for n in self._order if n in need]
        return cache[wanted]

    def extra_repr(self) -> str:
        return f"spec={self._spec.name!r}, nodes={len(self._order)}"


def build(spec: NetworkSpec | Mapping[str, Any] | str | Path, *, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None, seed: int | None = None, max_bytes: int | None = None) -> Network:
    """Build a :class:`Network` from a spec, dict, YAML/JSON text or file.

    ``device="meta"`` allocates nothing; otherwise the weights' size is checked
    against ``max_bytes`` (default: physical memory) before allocation, and
    parameters are initialised from ``seed`` (the same seed gives bit-identical
    weights in every process and on every build path).
    """
    return Network(spec, device=device, dtype=dtype, seed=seed, max_bytes=max_bytes)
