"""Turn a :class:`~netarchitect.spec.NetworkSpec` into an executable ``nn.Module``.

Blocks are first constructed on the ``meta`` device, where shapes are inferred
and the size of the weights is checked; only then are real tensors allocated
(``to_empty``) and initialised from the seed (:mod:`netarchitect.init`). That
one path makes CPU builds and meta-then-materialise builds bit-identical.

Context inputs: besides the tensors flowing along edges, a call may pass the
per-call values the spec declares under ``context`` (an attention mask, position
ids, a key/value cache, a timestep embedding). Each node names the context it
takes; the executor passes those values as keyword arguments, and a value with a
``scope(node_id)`` method (a :class:`~netarchitect.layers.kv_cache.ModelCache`)
gives each node its own part. Values not passed are not given to the blocks, so
their defaults apply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._probe import NodeInfo, construct, merge_tensors, node_arguments
from ._recompute import stats_preserving_context
from .errors import BudgetError, ShapeError, SpecError, suggest
from .layers.kv_cache import ModelCache
from .registry import get_network_class
from .spec import NetworkSpec, load_spec
from .spec_checks import topological_order

__all__ = [
    "Network",
    "NodeInfo",
    "available_memory",
    "build",
    "infer_shapes",
    "merge_tensors",
    "raise_problems",
    "sample_inputs",
]

SpecSource = NetworkSpec | Mapping[str, Any] | str | Path


def raise_problems(construction: Any) -> None:
    """Raise the construction's problems: a ``SpecError`` when a block refused its arguments,
    else a ``ShapeError``."""
    if construction.argument_problems:
        raise SpecError(problems=construction.problems)
    if construction.shape_problems:
        raise ShapeError(problems=construction.shape_problems)


def infer_shapes(spec: SpecSource, *, dtype: torch.dtype | None = None) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of every input and node, computed on ``meta`` (no weights allocated)."""
    spec = load_spec(spec)
    result = construct(spec, dtype)
    raise_problems(result)
    if spec.init:
        from .init import InitPolicy

        holder = nn.Module()
        holder.nodes = nn.ModuleDict(result.modules)
        InitPolicy.from_config(spec.init).check(holder)
    shapes = {i.name: tuple(i.shape) for i in spec.inputs}
    shapes.update({k: v.shape for k, v in result.infos.items()})
    return shapes


def sample_inputs(
    spec: SpecSource,
    batch: int = 2,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    int_high: int = 2,
) -> tuple[Tensor, ...]:
    """Random inputs of the declared shapes and dtypes: floats ``N(0, 1)``, integers in
    ``[0, int_high)`` (valid token ids for any vocabulary of ``int_high`` or more),
    booleans."""
    from ._probe import DTYPES

    spec = load_spec(spec)
    g = torch.Generator().manual_seed(seed)
    out = []
    for inp in spec.inputs:
        shape, dtype = (batch, *inp.shape), DTYPES[inp.dtype]
        if dtype.is_floating_point:
            x = torch.randn(shape, generator=g).to(dtype)
        else:
            x = torch.randint(0, int_high, shape, generator=g).to(dtype)
        out.append(x.to(device))
    return tuple(out)


def available_memory() -> int:
    """Memory this process can still allocate, in bytes (``MemAvailable``, else physical)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        pass
    try:  # pragma: no cover - not Linux
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def _resolve(root: nn.Module, path: str) -> tuple[nn.Module, str, Any]:
    """``(parent module, attribute name, object)`` of a dotted path under ``root``."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    found = parent._parameters.get(name, parent._modules.get(name))
    if found is None:
        raise AttributeError(f"{path!r} is neither a parameter nor a module")
    return parent, name, found


def _shapes(obj: Any) -> dict[str, tuple[int, ...]]:
    if isinstance(obj, nn.Module):
        return {k: tuple(v.shape) for k, v in obj.state_dict(keep_vars=True).items()}
    return {"": tuple(obj.shape)}


class Network(nn.Module):
    """An ``nn.Module`` executing a spec's DAG in topological order.

    ``forward(*inputs, return_nodes=None, **named_inputs_and_context)`` returns the
    single output tensor, a tuple for several outputs, or — with ``return_nodes`` — a
    dict of the named nodes' outputs (feature extraction). Keyword arguments are the
    spec's inputs or its declared context values.

    Shapes:
        Each input: ``(B, *spec.inputs[k].shape)``; outputs as in :meth:`node_info`.
    """

    def __init__(
        self,
        spec: SpecSource,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__()
        spec = load_spec(spec)
        result = construct(spec, dtype)
        raise_problems(result)
        self._spec = spec
        self._infos = result.infos
        self._order = list(topological_order(spec) or [])
        self._node_specs = {n.id: n for n in spec.nodes}
        self._input_names = [i.name for i in spec.inputs]
        self.nodes = nn.ModuleDict({nid: result.modules[nid] for nid in self._order})
        self._apply_ties()
        self.grad_checkpointing = False
        if self.init_policy is not None:
            self.init_policy.check(self)  # refuse rules that cannot apply, before allocating
        device = torch.device(device) if device is not None else torch.get_default_device()
        if device.type != "meta":
            self._check_size(max_bytes)
            from .init import materialize

            materialize(self, device, seed=seed)

    # ------------------------------------------------------------------ construction

    def _apply_ties(self) -> None:
        """Make each ``tie`` target the same parameter (or module) object as its source."""
        for target, source in self._spec.tie.items():
            path = f"tie.{target}"
            try:
                parent, name, old = _resolve(self.nodes, target)
                _, _, new = _resolve(self.nodes, source)
            except AttributeError as exc:
                raise SpecError(str(exc).strip("'\""), path=path) from None
            if type(old) is not type(new) or _shapes(old) != _shapes(new):
                raise ShapeError(
                    f"cannot tie {target!r} {_shapes(old)} to {source!r} {_shapes(new)}: "
                    "they differ in kind or shape",
                    path=path,
                )
            setattr(parent, name, new)

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> Network:
        """Allocate uninitialised tensors on ``device`` (tied parameters stay tied)."""
        super().to_empty(device=device, recurse=recurse)
        self._apply_ties()
        return self

    @property
    def init_policy(self) -> Any:
        """The spec's ``init`` rules as an :class:`~netarchitect.init.InitPolicy` (or ``None``);
        :func:`~netarchitect.init.materialize` and ``initialize`` apply it by default."""
        if not self._spec.init:
            return None
        from .init import InitPolicy

        return InitPolicy.from_config(self._spec.init)

    def _check_size(self, max_bytes: int | None) -> None:
        tensors = {id(t): t for t in [*self.parameters(), *self.buffers()]}.values()
        total = sum(t.numel() * t.element_size() for t in tensors)
        limit = available_memory() if max_bytes is None else max_bytes
        if total > limit:
            raise BudgetError(
                f"spec {self._spec.name!r} needs {total / 2**30:.2f} GiB of weights, more than the "
                f"{limit / 2**30:.2f} GiB available; build it on device='meta' to analyse it"
            )

    # ------------------------------------------------------------------ introspection

    @property
    def spec(self) -> NetworkSpec:
        """The spec this network was built from (``build(model.spec)`` rebuilds it)."""
        return self._spec

    @property
    def roles(self) -> dict[str, Any]:
        """The spec's ``roles`` (which class, and the nodes its methods use)."""
        from .spec import _thaw

        return _thaw(self._spec.roles)

    @property
    def context_names(self) -> tuple[str, ...]:
        """The context values a call may pass (the spec's ``context``)."""
        return self._spec.context

    def node_info(self) -> list[NodeInfo]:
        """Resolved parameters, output shape and parameter count of each node, in execution order."""
        return [self._infos[n] for n in self._order]

    def new_cache(self, max_length: int | None = None) -> ModelCache:
        """Empty decoding state: a cache for each node that takes ``kv_cache`` and keeps one
        (its block has ``new_cache``), for ``forward(..., kv_cache=cache)``."""
        caches = {}
        for node_id in self._order:
            module = self.nodes[node_id]
            if "kv_cache" in self._node_specs[node_id].context and hasattr(module, "new_cache"):
                caches[node_id] = module.new_cache(max_length)
        return ModelCache(caches)

    # ------------------------------------------------------------------ execution

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the activations of :meth:`checkpoint_nodes` during backward (training
        only; never for a node holding decoding state)."""
        self.grad_checkpointing = bool(enable)

    def checkpoint_nodes(self) -> frozenset[str]:
        """Nodes recomputed under gradient checkpointing: every node with parameters."""
        cache = self.__dict__.setdefault("_checkpoint_cache", {})
        if "nodes" not in cache:
            cache["nodes"] = frozenset(
                n for n in self._order if any(True for _ in self.nodes[n].parameters())
            )
        return cache["nodes"]

    def _bind(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Split a call into input values and (non-``None``) context values."""
        if len(args) > len(self._input_names):
            raise TypeError(
                f"{self._spec.name}: expected {len(self._input_names)} input(s) "
                f"{self._input_names}, got {len(args)}"
            )
        values = dict(zip(self._input_names, args, strict=False))
        context: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in self._input_names:
                if name in values:
                    raise TypeError(f"{self._spec.name}: input {name!r} given twice")
                values[name] = value
            elif name in self._spec.context:
                if value is not None:
                    context[name] = value
            else:
                known = [*self._input_names, *self._spec.context]
                what = "input or context" if self._spec.context else "input"
                raise TypeError(
                    f"{self._spec.name}: unknown {what} {name!r}{suggest(name, known)}"
                )
        missing = [n for n in self._input_names if n not in values]
        if missing:
            raise TypeError(f"{self._spec.name}: missing input(s) {missing}")
        return values, context

    def _run_node(
        self, node_id: str, module: nn.Module, args: list[Tensor], kwargs: dict[str, Any],
        stateful: bool,
    ) -> Tensor:
        """Run one node (subclasses hook in here); checkpointed when asked and stateless."""
        if (
            self.grad_checkpointing
            and not stateful
            and self.training
            and torch.is_grad_enabled()
            and node_id in self.checkpoint_nodes()
        ):
            return checkpoint(
                module, *args, use_reentrant=False,
                context_fn=stats_preserving_context(module), **kwargs,
            )
        return module(*args, **kwargs)

    def _execute(
        self,
        values: dict[str, Tensor],
        node_ids: Sequence[str],
        keep: Sequence[str],
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Run ``node_ids`` (in execution order) on ``values``, adding each node's output and
        dropping every value not in ``keep`` once its last reader has run (so inference
        holds only live activations, as a hand-written ``forward`` would)."""
        context = context or {}
        releases = self._release_plan(tuple(node_ids), frozenset(keep))
        for node_id, release in zip(node_ids, releases, strict=True):
            node = self._node_specs[node_id]
            args = node_arguments([values[s] for s in node.inputs], node.merge, node.merge_dim)
            kwargs: dict[str, Any] = {}
            stateful = False
            for kwarg, name in node.context.items():
                if name in context:
                    value = context[name]
                    scope = getattr(value, "scope", None)
                    if scope is not None:
                        value, stateful = scope(node_id), True
                    kwargs[kwarg] = value
            values[node_id] = self._run_node(node_id, self.nodes[node_id], args, kwargs, stateful)
            del args
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

    def _check_names(self, names: Sequence[str], what: str) -> None:
        known = set(self._order) | set(self._input_names)
        for name in names:
            if name not in known:
                raise SpecError(f"unknown node {name!r}{suggest(name, known)}", path=what)

    def run(
        self, values: Mapping[str, Tensor], outputs: Sequence[str], **context: Any
    ) -> dict[str, Tensor]:
        """Outputs of the nodes ``outputs``, running only what they need from the given
        ``values`` (inputs, or any nodes' outputs: an encoder's output, features) and
        ``context``. Returns ``{name: tensor}`` for ``outputs``."""
        self._check_names(list(values), "values")
        self._check_names(outputs, "outputs")
        unknown = [k for k in context if k not in self._spec.context]
        if unknown:
            raise TypeError(f"{self._spec.name}: unknown context {unknown}")
        context = {k: v for k, v in context.items() if v is not None}
        given = tuple(sorted(values))
        needed = self._needed(tuple(outputs), given)
        missing = sorted(
            {s for n in needed for s in self._node_specs[n].inputs}
            - set(needed) - set(values)
        )
        if missing:
            raise TypeError(f"{self._spec.name}: outputs {list(outputs)} also need {missing}")
        result = self._execute(dict(values), needed, outputs, context)
        return {name: result[name] for name in outputs}

    def forward(self, *args: Any, return_nodes: Sequence[str] | None = None, **kwargs: Any) -> Any:
        wanted = list(return_nodes) if return_nodes is not None else list(self._spec.outputs)
        values, context = self._bind(args, kwargs)
        self._check_names(wanted, "return_nodes")
        values = self._execute(values, self._needed(tuple(wanted)), wanted, context)
        if return_nodes is not None:
            return {name: values[name] for name in wanted}
        outs = [values[o] for o in self._spec.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def upstream_nodes(self, outputs: Sequence[str]) -> list[str]:
        """The nodes (in execution order) that computing ``outputs`` runs, those included."""
        return list(self._needed(tuple(outputs)))

    def _needed(self, wanted: tuple[str, ...], given: tuple[str, ...] = ()) -> list[str]:
        """Nodes (in execution order) that the ``wanted`` outputs depend on, stopping at the
        ``given`` values."""
        cache = self.__dict__.setdefault("_needed_cache", {})
        key = (wanted, given)
        if key not in cache:
            need = set(wanted)
            stop = set(given)
            for node_id in reversed(self._order):
                if node_id in need and node_id not in stop:
                    need.update(self._node_specs[node_id].inputs)
            cache[key] = [n for n in self._order if n in need and n not in stop]
        return cache[key]

    def extra_repr(self) -> str:
        return f"spec={self._spec.name!r}, nodes={len(self._order)}"


def network_class(spec: NetworkSpec) -> type[Network]:
    """The :class:`Network` subclass a spec's ``roles.kind`` names (``Network`` without roles)."""
    if not spec.roles:
        return Network
    return get_network_class(spec.roles["kind"])  # type: ignore[return-value]


def build(
    spec: SpecSource,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
    max_bytes: int | None = None,
) -> Network:
    """Build a :class:`Network` from a spec, dict, YAML/JSON text or file.

    A spec with ``roles`` builds the Network subclass its ``kind`` names (a classifier,
    a language model, ...). ``device="meta"`` allocates nothing; otherwise the weights'
    size is checked against ``max_bytes`` (default: the memory available) before
    allocation, and parameters are initialised from ``seed`` (the same seed gives
    bit-identical weights in every process and on every build path). Without
    ``device`` the tensors go to torch's default device (``with torch.device("meta"):``
    works).
    """
    spec = load_spec(spec)
    return network_class(spec)(spec, device=device, dtype=dtype, seed=seed, max_bytes=max_bytes)
