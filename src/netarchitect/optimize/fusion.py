"""Inference fusion: fold BatchNorm into the preceding conv/linear, merge Q/K/V, drop dropout.

:func:`fuse` returns a new model in eval mode (the input is not touched) whose outputs
equal the input's in eval mode to float rounding:

- **BatchNorm folding**: every ``conv/linear -> BatchNorm`` pair whose norm reads
  only that layer's output (found on a :mod:`torch.fx` graph, inside blocks and
  between spec nodes) becomes one conv/linear with a bias; the norm becomes an identity.
  Pre-activation norms (``norm -> act -> conv``, DenseNet) are not pairs and stay.
- **Q/K/V merging**: each :class:`~netarchitect.layers.attention.MultiHeadAttention`
  becomes a :class:`~netarchitect.optimize._qkv.FusedQKVAttention` with one merged
  projection weight (its state dict keeps the unmerged names).
- **Dropout**: dropout and drop-path modules become identities.

A spec-built :class:`~netarchitect.network.Network` stays spec-built: a BatchNorm node
after a conv/linear node becomes an ``identity`` node and the conv gets ``bias: true``;
a block whose pairs are all folded gets ``norm_layer: identity`` (any ``*norm_layer``
argument that named a BatchNorm); dropout nodes become ``identity`` nodes. Each edit is
checked by building the edited spec on ``meta`` and comparing the block's weights with
the folded block's. ``build(fused.spec)`` loaded with ``fused.state_dict()`` gives the
same outputs. Where a block's arguments cannot express the fold (e.g. a block that
hard-codes ``bias=False`` on its convs), the result is a :class:`FusedModel` wrapping the
folded network (not spec-built; ``unexpressed`` says why), or, with ``keep_spec=True``,
those folds are skipped and the result stays a Network. Today that is the case of the
ResNet blocks (``basic_block``, ``bottleneck``: their convs are ``bias=False`` whatever
the norm) and of ``dense_block`` (its pre-activation norms cannot be folded, so
``norm_layer: identity`` would drop them too).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from ..errors import NetArchitectError
from ..layers.attention import MultiHeadAttention
from ..layers.basic import Identity
from ..layers.connections import DropPath
from ..layers.norm import get_norm_layer
from ..network import Network, build
from ..registry import get_block
from ..spec import NetworkSpec
from ._bn_fold import BNPair, find_bn_pairs, fold_bn_pair, foldable_into, is_batchnorm
from ._qkv import FusedQKVAttention, merge_qkv

__all__ = ["FusedModel", "FusedQKVAttention", "fuse"]

Shapes = dict[str, tuple[int, ...]]


class FusedModel(nn.Module):
    """A fused network that no spec describes: ``model`` is the folded network (its own
    ``spec`` is the *unfused* one: do not rebuild from it), ``unexpressed`` maps each node
    whose fold the spec cannot express to the reason.

    Shapes:
        as ``model``.
    """

    def __init__(self, model: nn.Module, unexpressed: dict[str, str]) -> None:
        super().__init__()
        self.model = model
        self.unexpressed = dict(unexpressed)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def fuse(
    model: nn.Module,
    *,
    bn: bool = True,
    qkv: bool = True,
    dropout: bool = True,
    keep_spec: bool = False,
) -> nn.Module:
    """An inference copy of ``model`` with BatchNorm folded, Q/K/V merged and dropout dropped.

    ``model`` is left unchanged (its state dict stays bit-identical). The result is in eval
    mode and meant for inference only (training it would train without BatchNorm). A
    spec-built model gives a spec-built model whose ``spec`` describes the fused network,
    unless a fold cannot be expressed in the spec: then a :class:`FusedModel`, or with
    ``keep_spec=True`` a Network with those folds left out.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse() takes an nn.Module, got {type(model).__name__}")
    work = copy.deepcopy(model).eval()
    pairs = find_bn_pairs(work) if bn else []
    result: nn.Module = work
    if isinstance(work, Network):
        pairs += _node_pairs(work) if bn else []
        spec, unexpressed = _fused_spec(work, pairs, dropout)
        if unexpressed and keep_spec:
            pairs = [p for p in pairs if not _nodes_of(p) & unexpressed.keys()]
            spec, unexpressed = _fused_spec(work, pairs, dropout)
            if unexpressed:  # pragma: no cover - only dropout -> identity edits remain
                raise RuntimeError(f"fuse: cannot express {unexpressed} in the spec")
        for pair in pairs:
            fold_bn_pair(work, pair)
        if unexpressed:
            result = FusedModel(work, unexpressed)
        elif spec != work.spec:
            result = _rebuild(spec, work)
    else:
        for pair in pairs:
            fold_bn_pair(work, pair)
    if dropout:
        _drop_dropout(result)
    if qkv:
        for module in list(result.modules()):
            if isinstance(module, MultiHeadAttention):
                merge_qkv(module)
    return result.eval()


# --------------------------------------------------------------------------- spec edits


def _node_of(pair: BNPair) -> str:
    """The spec node that holds a pair's norm (names are ``nodes.<id>...``)."""
    return pair.bn.split(".")[1]


def _nodes_of(pair: BNPair) -> set[str]:
    """The spec nodes a pair touches (one for a pair inside a block, two across nodes)."""
    return {pair.conv.split(".")[1], pair.bn.split(".")[1]}


def _mentions(value: Any, names: set[str]) -> bool:
    """Whether a (nested) roles value names one of ``names``."""
    if isinstance(value, str):
        return value in names
    if isinstance(value, Mapping):
        value = list(value.values())
    return isinstance(value, Iterable) and any(_mentions(v, names) for v in value)


def _node_pairs(net: Network) -> list[BNPair]:
    """``conv/linear`` node -> ``BatchNorm`` node pairs of the spec's DAG."""
    spec = net.spec
    readers: dict[str, int] = {}
    for node in spec.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    tied = {path.split(".")[0] for kv in spec.tie.items() for path in kv}
    pairs = []
    for node in spec.nodes:
        if not is_batchnorm(net.nodes[node.id]) or len(node.inputs) != 1 or node.context:
            continue
        src = node.inputs[0]
        if src not in net.nodes or not foldable_into(net.nodes[src]) or readers[src] != 1:
            continue
        if src in spec.outputs or {src, node.id} & tied or _mentions(spec.roles, {src}):
            continue
        pairs.append(BNPair(f"nodes.{src}", f"nodes.{node.id}"))
    return pairs


def _norm_params(block: str, params: dict[str, Any]) -> dict[str, Any]:
    """The block's ``*norm_layer`` arguments that build a BatchNorm, set to ``identity``."""
    try:
        signature = inspect.signature(get_block(block).__init__)
    except (KeyError, TypeError, ValueError):  # pragma: no cover - registered blocks only
        return {}
    edits = {}
    for name, arg in signature.parameters.items():
        if not name.endswith("norm_layer"):
            continue
        value = params.get(name, arg.default)
        try:
            norm = get_norm_layer(value)(4, device="meta")
        except Exception:  # noqa: BLE001 - not constructible alone: not a BatchNorm to drop
            norm = None
        if norm is not None and is_batchnorm(norm):
            edits[name] = "identity"
    return edits


def _shapes(module: nn.Module) -> Shapes:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _edits(
    net: Network, pairs: list[BNPair], dropout: bool
) -> dict[str, tuple[dict[str, Any], Shapes]]:
    """Per node: the field changes its spec needs and the weight shapes it must then have."""
    spec = net.spec
    edits: dict[str, tuple[dict[str, Any], Shapes]] = {}
    for pair in pairs:
        node_id = _node_of(pair)
        node = spec.node(node_id)
        if pair.bn == f"nodes.{node_id}":  # a BatchNorm node: identity, its conv node biased
            src = pair.conv.split(".")[1]
            src_params = dict(spec.node(src).params, bias=True)
            shapes = _shapes(net.nodes[src])
            shapes["bias"] = (shapes["weight"][0],)
            edits[src] = ({"params": src_params}, shapes)
            edits[node_id] = ({"block": "identity", "params": {}}, {})
            continue
        _, shapes = edits.get(node_id, ({}, _shapes(net.nodes[node_id])))
        params = dict(node.params)
        fields = {"params": {**params, **_norm_params(node.block, params)}}
        prefix = f"nodes.{node_id}."
        bn, conv = pair.bn[len(prefix):], pair.conv[len(prefix):]
        shapes = {k: v for k, v in shapes.items() if not k.startswith(bn + ".")}
        shapes[f"{conv}.bias"] = (shapes[f"{conv}.weight"][0],)
        edits[node_id] = (fields, shapes)
    if dropout:
        for node in spec.nodes:
            if isinstance(net.nodes[node.id], _DropoutNd | DropPath):
                edits[node.id] = ({"block": "identity", "params": {}}, {})
    return edits


def _apply(spec: NetworkSpec, edits: dict[str, dict[str, Any]]) -> NetworkSpec:
    for node_id, fields in edits.items():
        spec = spec.replace_node(node_id, **fields)
    return spec


def _mismatch(spec: NetworkSpec, expected: dict[str, Shapes]) -> dict[str, str]:
    """Why each node of the edited ``spec`` does not have the ``expected`` weight shapes."""
    try:
        meta = build(spec, device="meta")
    except NetArchitectError as exc:
        return {node_id: f"the edited spec does not build: {exc}" for node_id in expected}
    problems = {}
    for node_id, shapes in expected.items():
        got = _shapes(meta.nodes[node_id])
        if got != shapes:
            diff = sorted(set(got.items()) ^ set(shapes.items()))[:3]
            problems[node_id] = (
                f"block {spec.node(node_id).block!r} cannot express the folded weights "
                f"(differs in {diff})"
            )
    return problems


def _fused_spec(
    net: Network, pairs: list[BNPair], dropout: bool
) -> tuple[NetworkSpec, dict[str, str]]:
    """The fused network's spec and, per node the spec cannot express, the reason."""
    edits = _edits(net, pairs, dropout)
    fields = {k: f for k, (f, _) in edits.items()}
    expected = {k: s for k, (_, s) in edits.items()}
    spec = _apply(net.spec, fields)
    problems = _mismatch(spec, expected) if edits else {}
    if len(problems) > 1:  # find the culprits one node at a time
        problems = {}
        for node_id, shapes in expected.items():
            one = _apply(net.spec, {node_id: fields[node_id]})
            problems.update(_mismatch(one, {node_id: shapes}))
    return spec, problems


def _rebuild(spec: NetworkSpec, folded: Network) -> Network:
    """``build(spec)`` on ``folded``'s device and dtype, loaded with its weights."""
    tensor = next(iter([*folded.parameters(), *folded.buffers()]), None)
    floating = next((p for p in folded.parameters() if p.is_floating_point()), None)
    net = build(
        spec,
        device=tensor.device if tensor is not None else None,
        dtype=floating.dtype if floating is not None else None,
        seed=0,
    )
    net.load_state_dict(folded.state_dict())
    return net


# --------------------------------------------------------------------------- dropout


def _drop_dropout(root: nn.Module) -> None:
    """Replace every dropout and drop-path module under ``root`` by an identity."""
    for name, module in list(root.named_modules()):
        if name and isinstance(module, _DropoutNd | DropPath):
            parent, _, attr = name.rpartition(".")
            setattr(root.get_submodule(parent) if parent else root, attr, Identity())
