"""Per-block figures of a model for the parallelism planner, measured once on the meta device.

:func:`profile_model` runs :mod:`netarchitect.analysis` on the model at one sequence
(and two, to separate per-sequence from fixed activation bytes): exact parameter shapes,
forward/backward FLOPs and the tensors autograd saves, split by *unit* (the repeated
blocks: the FSDP units, the checkpointed blocks and the pipeline's split points). The
:class:`ModelProfile` then answers, by arithmetic alone, what one rank holds under a
layout — so a LLaMA-70B-shaped model is profiled once and every plan costs microseconds.

Sharding rules (what the torch engines do):

* FSDP2 (``fully_shard``) splits dim 0 of every parameter with ``torch.chunk``: rank ``r``
  holds ``min(c, max(0, d0 - r*c))`` rows, ``c = ceil(d0 / N)`` (:func:`fsdp_rows`);
* ZeRO-1/2 (DeepSpeed) partition the flattened tensors evenly: ``ceil(P / N)`` elements;
* tensor parallel as :func:`~netarchitect.parallel.plan.derive_plan` applies it (Megatron's
  layout): column-parallel linears (q/k/v, gate/up) split dim 0 (and their bias),
  row-parallel ones (out, down) dim 1; norms, embeddings and the head are replicated.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..analysis._common import Inputs
from ..analysis.flops import count_flops
from ..analysis.memory import trace_activations
from ..analysis.params import count_params, unique_tensors
from .errors import ParallelError
from .roles import find_roles

__all__ = ["ModelProfile", "ParamInfo", "UnitInfo", "fsdp_rows", "profile_model", "tp_role"]

_TP_KIND = {"attn_in": "col", "mlp_in": "col", "attn_out": "row", "mlp_out": "row"}


def tp_role(kind: str) -> str:
    """Tensor-parallel role of a module role (:mod:`.roles`): ``"col"``, ``"row"`` or ``"rep"``
    (what :func:`~netarchitect.parallel.plan.derive_plan` does with it)."""
    return _TP_KIND.get(kind, "rep")


def fsdp_rows(d0: int, world: int, rank: int = 0) -> int:
    """Rows of a dim-0 size ``d0`` that FSDP2 (``torch.chunk``) gives ``rank`` of ``world``."""
    chunk = math.ceil(d0 / world)
    return min(chunk, max(0, d0 - rank * chunk))


@dataclass(frozen=True)
class ParamInfo:
    """One unique trainable tensor: its shape, tensor-parallel role and owning unit."""

    path: str
    shape: tuple[int, ...]
    role: str = "rep"
    unit: str = ""
    pre: bool = True  # outside the units and before them (embedding side)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def tp_shape(self, tp: int) -> tuple[int, ...]:
        """The local shape under ``tp``-way tensor parallel (rank 0's, chunk rule)."""
        if tp == 1 or self.role == "rep" or not self.shape:
            return self.shape
        dim = 1 if self.role == "row" and len(self.shape) == 2 else 0
        if self.role == "row" and len(self.shape) == 1:
            return self.shape  # a row-parallel bias is replicated
        shape = list(self.shape)
        shape[dim] = fsdp_rows(shape[dim], tp)
        return tuple(shape)


@dataclass
class UnitInfo:
    """Figures of one unit per sequence (``*_fixed`` do not grow with the batch).

    ``saved`` are the bytes autograd keeps inside the unit, ``sharded`` the part that
    tensor parallel divides; ``ckpt_saved`` what it keeps beyond its input when it is
    recomputed; ``inputs`` the bytes kept at its boundary under checkpointing.
    """

    name: str
    params: int = 0
    fwd_flops: int = 0
    bwd_flops: int = 0
    saved: float = 0.0
    sharded: float = 0.0
    ckpt_saved: float = 0.0
    ckpt_sharded: float = 0.0
    inputs: float = 0.0
    saved_fixed: float = 0.0
    ckpt_fixed: float = 0.0

    def activations(self, batch: int, tp: int, *, checkpointed: bool = False) -> float:
        """Saved bytes for ``batch`` sequences on one of ``tp`` tensor-parallel ranks."""
        if checkpointed:
            return self.ckpt_fixed + batch * (self.ckpt_saved - self.ckpt_sharded * (1 - 1 / tp))
        return self.saved_fixed + batch * (self.saved - self.sharded * (1 - 1 / tp))


@dataclass
class ModelProfile:
    """What the planner needs to know about a model (see :func:`profile_model`)."""

    name: str
    seq_len: int
    act_bytes: int
    params: list[ParamInfo]
    units: list[UnitInfo]
    pre: UnitInfo
    post: UnitInfo
    outputs: float
    buffers: int
    boundary: float
    heads: list[tuple[str, int, int]] = field(default_factory=list)
    widths: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def num_params(self) -> int:
        return sum(p.numel for p in self.params)

    @property
    def flops_per_seq(self) -> int:
        """Forward + backward FLOPs of one sequence (the whole model)."""
        parts = [*self.units, self.pre, self.post]
        return sum(u.fwd_flops + u.bwd_flops for u in parts)

    def tp_problems(self, tp: int) -> list[str]:
        """Why ``tp``-way tensor parallel cannot split this model (empty when it can)."""
        if tp == 1:
            return []
        if not any(p.role != "rep" for p in self.params):
            return [f"tp={tp}: {self.name} has no attention or MLP projections to shard"]
        bad = [f"{path}: {what}={n} is not divisible by tp={tp}" for path, what, n in
               [(p, "num_heads", h) for p, h, _ in self.heads]
               + [(p, "num_kv_heads", k) for p, _, k in self.heads] if n % tp]
        bad += [f"{path}: {what}={n} is not divisible by tp={tp}"
                for path, what, n in self.widths if n % tp]
        return bad

    def stages(self, pp: int) -> list[list[int]]:
        """Unit indices of each of ``pp`` contiguous stages of at least one block, minimising
        the largest stage's forward + backward FLOPs (exact; the embedding side counts on
        stage 0, the head on the last), as :func:`~netarchitect.parallel.pipeline.split_model`
        balances measured FLOPs."""
        if pp < 1 or pp > max(1, len(self.units)):
            raise ParallelError(f"pp={pp}: the model has {len(self.units)} blocks to split")
        cost = [u.fwd_flops + u.bwd_flops for u in self.units]
        if cost:
            cost[0] += self.pre.fwd_flops + self.pre.bwd_flops
            cost[-1] += self.post.fwd_flops + self.post.bwd_flops
        return _balance(tuple(cost), pp)


@functools.lru_cache(maxsize=64)
def _balance(cost: tuple[int, ...], parts: int) -> list[list[int]]:
    """Contiguous non-empty groups of ``cost`` minimising the largest sum (dynamic programming)."""
    n = len(cost)
    if parts == 1:
        return [list(range(n))]
    prefix = [0, *itertools.accumulate(cost)]
    # best[k][j]: the smallest largest-sum of k + 1 groups covering cost[:j], and the last cut
    best = [{j: (prefix[j], 0) for j in range(1, n + 1)}]
    for k in range(1, parts):
        row = {}
        for j in range(k + 1, n + 1):
            row[j] = min((max(best[-1][i][0], prefix[j] - prefix[i]), i) for i in range(k, j))
        best.append(row)
    cuts, j = [], n
    for k in range(parts - 1, 0, -1):
        j = best[k][j][1]
        cuts.append(j)
    bounds = [0, *reversed(cuts), n]
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds)]


def _tp_modules(model: nn.Module) -> tuple[list[str], dict[str, str], set[str],
                                            list[tuple[str, int, int]], list[tuple[str, str, int]]]:
    """FSDP units, each module's TP role, the TP regions (attention, MLP) and their sizes."""
    found = find_roles(model)
    units = [p for p, r in found.items() if r.kind == "block"]
    roles = {p: tp_role(r.kind) for p, r in found.items()}
    regions = {p for p, r in found.items() if r.kind in ("attention", "mlp")}
    heads = [(p, r.heads, r.kv_heads or r.heads) for p, r in found.items() if r.kind == "attention"]
    widths = [(p, "hidden features", r.features) for p, r in found.items() if r.kind == "mlp"]
    return units, roles, regions, heads, widths


def _innermost(by_module: dict[str, dict[Any, int]]) -> dict[Any, str]:
    owner: dict[Any, str] = {}
    for path in sorted(by_module, key=lambda p: (p.count("."), len(p))):
        for key in by_module[path]:
            owner[key] = path
    return owner


def _is_sharded(path: str, roles: dict[str, str], regions: set[str]) -> bool:
    if roles.get(path) == "row":
        return True
    if roles.get(path) == "col":
        return False
    return any(path == r or path.startswith(r + ".") for r in regions)


@dataclass
class _Trace:
    """One activation trace reduced to per-unit and outside byte figures."""

    units: dict[str, list[float]]  # name -> [saved, sharded, ckpt_saved, ckpt_sharded, inputs]
    pre: list[float]
    post: list[float]
    outputs: float


def _reduce(model: nn.Module, inputs: Inputs, units: list[str], roles: dict[str, str],
            regions: set[str], order: dict[str, int]) -> _Trace:
    called: list[str] = []
    unit_set = set(units)

    def post(path: str, module: nn.Module, args: Any, out: Any) -> None:
        if path in unit_set:
            called.append(path)

    trace = trace_activations(model, inputs, units=units, post=post)
    owner = _innermost(trace.by_module)
    first = order[units[0]] if units else len(order)
    kept: set[Any] = set(trace.outside_units)
    for call in trace.unit_calls:
        kept |= set(call.inputs)
    figures: dict[str, list[float]] = {u: [0.0] * 5 for u in units}
    for path, call in zip(called, trace.unit_calls):
        fig = figures[path]
        for key, n in call.saved.items():
            shard = _is_sharded(owner.get(key, ""), roles, regions)
            fig[0] += n
            fig[1] += n if shard else 0
            if key not in kept:
                fig[2] += n
                fig[3] += n if shard else 0
        fig[4] += sum(n for k, n in call.inputs.items() if k not in trace.outside_units)
    pre, post_ = [0.0, 0.0], [0.0, 0.0]
    for key, n in trace.outside_units.items():
        path = owner.get(key, "")
        side = pre if order.get(path, len(order)) < first and path else post_
        side[0] += n
        side[1] += n if _is_sharded(path, roles, regions) else 0
    return _Trace(figures, pre, post_, float(trace.output_bytes))


def _flop_unit(name: str, flops: Any) -> tuple[int, int]:
    fwd = flops.by_module.get(name)
    bwd = flops.by_module_backward.get(name)
    return (fwd.total_flops if fwd else 0, bwd.total_flops if bwd else 0)


def profile_model(
    model: nn.Module,
    make_inputs: Any,
    *,
    seq_len: int,
    name: str = "model",
    units: Iterable[str] | None = None,
) -> ModelProfile:
    """Profile ``model`` (best on the meta device) for the planner.

    ``make_inputs(batch)`` returns the model's inputs for ``batch`` sequences of
    ``seq_len``; ``units`` are the repeated blocks (default: the largest group of
    same-class sibling modules, e.g. the Transformer blocks).
    """
    blocks, roles, regions, heads, widths = _tp_modules(model)
    unit_list = list(units) if units is not None else blocks
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    one = _reduce(model, make_inputs(1), unit_list, roles, regions, order)
    two = _reduce(model, make_inputs(2), unit_list, roles, regions, order)
    flops = count_flops(model, make_inputs(1), backward=True)
    params = _param_infos(model, unit_list, roles, order)
    unit_infos = []
    for u in unit_list:
        a, b = one.units[u], two.units[u]
        fwd, bwd = _flop_unit(u, flops)
        unit_infos.append(UnitInfo(
            u, sum(p.numel for p in params if p.unit == u), fwd, bwd,
            saved=b[0] - a[0], sharded=b[1] - a[1], ckpt_saved=b[2] - a[2],
            ckpt_sharded=b[3] - a[3], inputs=b[4] - a[4],
            saved_fixed=2 * a[0] - b[0], ckpt_fixed=2 * a[2] - b[2],
        ))
    total_fwd = flops.forward.total_flops
    total_bwd = flops.backward.total_flops if flops.backward is not None else 0
    rest_fwd = total_fwd - sum(u.fwd_flops for u in unit_infos)
    rest_bwd = total_bwd - sum(u.bwd_flops for u in unit_infos)
    pre_fwd = sum(_flop_unit(n, flops)[0] for n in _side_modules(model, unit_list, order))
    side = []
    for a, b, fwd, bwd, label in ((one.pre, two.pre, pre_fwd, 0, "pre"),
                                   (one.post, two.post, rest_fwd - pre_fwd, rest_bwd, "post")):
        side.append(UnitInfo(label, sum(p.numel for p in params if not p.unit and p.pre == (label == "pre")),
                             fwd, bwd, saved=b[0] - a[0], sharded=b[1] - a[1],
                             ckpt_saved=b[0] - a[0], ckpt_sharded=b[1] - a[1],
                             saved_fixed=2 * a[0] - b[0], ckpt_fixed=2 * a[0] - b[0]))
    boundary = unit_infos[0].inputs if unit_infos else 0.0
    dtype = next(iter(model.parameters()), torch.empty(0)).dtype
    counts = count_params(model, by_module=False)
    return ModelProfile(
        name, seq_len, dtype.itemsize, params, unit_infos, side[0], side[1],
        outputs=two.outputs - one.outputs, buffers=counts.buffer_bytes, boundary=boundary,
        heads=heads, widths=widths,
    )


def _side_modules(model: nn.Module, units: list[str], order: dict[str, int]) -> list[str]:
    """Maximal modules outside every unit that run before the first unit (the embedding side)."""
    first = order[units[0]] if units else len(order)
    ancestors = {""} | {u.rsplit(".", i)[0] for u in units for i in range(1, u.count(".") + 1)}
    found = []
    for name, _ in model.named_modules():
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        outside = name and name not in ancestors and name not in units
        if outside and parent in ancestors and order[name] < first:
            found.append(name)
    return found


def _param_infos(model: nn.Module, units: list[str], roles: dict[str, str],
                 order: dict[str, int]) -> list[ParamInfo]:
    first = order[units[0]] if units else len(order)
    seen = unique_tensors(p for p in model.parameters() if p.requires_grad)
    keys = {id(t) for t in seen.values()}
    infos = []
    for path, p in model.named_parameters():
        if id(p) not in keys:
            continue
        keys.discard(id(p))
        module_path = path.rsplit(".", 1)[0] if "." in path else ""
        role = roles.get(module_path, "rep")
        unit = next((u for u in units if path.startswith(u + ".")), "")
        infos.append(ParamInfo(path, tuple(p.shape), role, unit,
                               pre=order.get(module_path, 0) < first))
    return infos
