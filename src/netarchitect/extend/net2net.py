"""Net2Net growth (Chen, Goodfellow & Shlens, ICLR 2016): function-preserving widening and
deepening of MLPs, CNNs (with BatchNorm) and Transformer blocks.

**Widening** (Net2WiderNet) replicates units: new unit ``k`` copies old unit ``g(k)``
(``g(k) = k`` for the old units, a uniform random old unit for the new ones); every layer
between producer and consumer that is indexed by unit (BatchNorm weights and running
statistics, per-head relative position biases) is indexed the same way, and the
consumer's incoming weights of unit ``k`` are divided by the replication count of
``g(k)``. ``noise > 0`` adds Gaussian noise to those divided weights, centred within each
group of replicas, so replicas learn apart (symmetry broken) while the sum over replicas,
and hence the function, is unchanged.

**Deepening** (Net2DeeperNet) inserts layers initialised to the identity: a square identity
``Linear`` (after a ReLU, ``relu(I x) = x``), a Dirac convolution with BatchNorm set to the
identity (``running_mean = 0``, ``running_var = 1 - eps``, ``weight = 1``, ``bias = 0``:
exact in eval mode; in training mode BatchNorm normalises with batch statistics, as in the
paper), a residual block whose branch ends at zero (``zero_init_last``), or a pre-norm
Transformer block with zero-initialised output projections (``x + 0``).

Module-level functions (:func:`widen_units`, :func:`widen_mlp`, :func:`widen_heads`,
:func:`identity_layer`) edit any ``nn.Module`` in place; on a spec-built
:class:`~netarchitect.network.Network`, :func:`widen` and :func:`deepen` return a new
network whose ``model.spec`` is the edited spec (``build(model.spec)`` rebuilds the same
architecture) and whose weights are mapped from the original. Outputs are identical
before and after (to float rounding, in eval mode).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..errors import SpecError, suggest
from ..layers.attention import MultiHeadAttention
from ..layers.connections import Residual
from ..layers.mlp import MLP, GatedMLP
from ..layers.transformer import TransformerBlock
from ..network import Network, build
from ..registry import get_block, layer_table
from ..spec import NetworkSpec, NodeSpec

__all__ = [
    "deepen",
    "identity_layer",
    "widen",
    "widen_heads",
    "widen_mlp",
    "widen_units",
    "wider_mapping",
]

#: Parameter-free blocks that act per channel (a widened unit passes through them unchanged).
PASS_THROUGH = frozenset({
    "identity", "dropout", "drop_path", "flatten", "global_pool", "maxpool2d", "avgpool2d",
    "adaptive_avgpool2d", "adaptive_maxpool2d", "gem",
})
PRODUCERS = {"linear": "out_features", "conv1d": "out_channels", "conv2d": "out_channels",
             "conv_norm_act": "out_channels"}
CONSUMERS = frozenset({"linear", "conv1d", "conv2d", "conv_norm_act"})
NORMS = frozenset({"batchnorm1d", "batchnorm2d"})


# --------------------------------------------------------------------------- mapping


def wider_mapping(old: int, new: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Net2Net's random mapping ``g``: ``g(k) = k`` for ``k < old``, uniform in ``[0, old)``
    after. Raises :class:`SpecError` unless ``new >= old >= 1``."""
    if isinstance(new, bool) or not isinstance(new, int) or new < old:
        raise SpecError(f"cannot widen {old} units to {new!r}: widening needs at least {old}")
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def _expand(index: Tensor, block: int) -> Tensor:
    """Unit index -> element index when each unit spans ``block`` consecutive elements."""
    return (index[:, None] * block + torch.arange(block)).flatten()


def _set(module: nn.Module, name: str, value: Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(module, name, value.contiguous())


def _check_groups(module: nn.Module) -> None:
    if isinstance(module, _ConvNd) and module.groups != 1:
        raise SpecError(f"cannot widen a grouped convolution ({module}): only groups=1")


def _conv_and_norm(module: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """The weight layer and the per-unit norm of a producer (``ConvNormAct``: conv + norm)."""
    if isinstance(module, (nn.Linear, _ConvNd)):
        return module, None
    conv, norm = getattr(module, "conv", None), getattr(module, "norm", None)
    if isinstance(conv, _ConvNd):
        if norm is None or isinstance(norm, (nn.Identity, _BatchNorm)):
            return conv, norm if isinstance(norm, _BatchNorm) else None
        raise SpecError(f"cannot widen through {type(norm).__name__}: it mixes units "
                        "(only BatchNorm keeps the function)")
    raise SpecError(f"cannot widen {type(module).__name__}: expected a Linear or a convolution")


def _select_out(module: nn.Module, index: Tensor) -> None:
    """Keep output units ``index`` (rows) of a Linear, convolution or BatchNorm, in place."""
    if isinstance(module, _BatchNorm):
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, name) is not None:
                _set(module, name, getattr(module, name)[index])
        module.num_features = len(index)
        return
    layer, norm = _conv_and_norm(module)
    _check_groups(layer)
    _set(layer, "weight", layer.weight[index])
    if layer.bias is not None:
        _set(layer, "bias", layer.bias[index])
    _resize(layer, "out", len(index))
    if norm is not None:
        _select_out(norm, index)


def _units(layer: nn.Module, side: str) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features if side == "out" else layer.in_features
    return layer.out_channels if side == "out" else layer.in_channels


def _resize(layer: nn.Module, side: str, n: int) -> None:
    if isinstance(layer, nn.Linear):
        setattr(layer, "out_features" if side == "out" else "in_features", n)
    else:
        setattr(layer, "out_channels" if side == "out" else "in_channels", n)


def _select_in(
    module: nn.Module, index: Tensor, counts: Tensor, noise: float, generator: torch.Generator
) -> None:
    """Replicate input units ``index`` of a consumer, dividing by the replication ``counts``
    (noise centred within each replica group keeps the function), in place."""
    layer, _ = _conv_and_norm(module)
    _check_groups(layer)
    old_in = _units(layer, "in")
    if old_in % len(counts):
        raise SpecError(f"{type(layer).__name__} takes {old_in} inputs, not a multiple of the "
                        f"{len(counts)} units being widened")
    block = old_in // len(counts)  # > 1 when a (C, H, W) map was flattened into a Linear
    cols = _expand(index, block)
    col_counts = counts[index].repeat_interleave(block).to(layer.weight.dtype)
    shape = (1, -1) + (1,) * (layer.weight.dim() - 2)
    weight = layer.weight[:, cols] / col_counts.view(shape)
    if noise > 0:
        eps = torch.randn(weight.shape, generator=generator).to(weight) * noise * layer.weight.std()
        sums = torch.zeros_like(layer.weight).index_add_(1, cols, eps)  # per original unit
        eps = eps - sums[:, cols] / col_counts.view(shape)
        weight = weight + eps
    _set(layer, "weight", weight)
    _resize(layer, "in", len(cols))


def widen_units(
    producer: nn.Module,
    consumer: nn.Module,
    width: int,
    *,
    between: Sequence[nn.Module] = (),
    noise: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """Net2WiderNet on plain modules, in place: ``producer`` (Linear, convolution with
    ``groups=1``, or a conv + BatchNorm block) gets ``width`` output units, each BatchNorm
    in ``between`` follows, and ``consumer`` (Linear or convolution, possibly reading a
    flattened feature map) takes the replicated units with divided weights. Returns the
    mapping ``g``."""
    layer, _ = _conv_and_norm(producer)
    old = _units(layer, "out")
    gen = torch.Generator().manual_seed(seed)
    index = wider_mapping(old, width, generator=gen)
    counts = torch.bincount(index, minlength=old)
    with torch.no_grad():
        _select_out(producer, index)
        for norm in between:
            if not isinstance(norm, _BatchNorm):
                raise SpecError(f"cannot widen through {type(norm).__name__}: only BatchNorm "
                                "keeps the function")
            _select_out(norm, index)
        _select_in(consumer, index, counts, noise, gen)
    return index


def _ffn(module: nn.Module) -> nn.Module:
    if isinstance(module, TransformerBlock):
        module = module.mlp.fn
    if not isinstance(module, (MLP, GatedMLP)):
        raise SpecError(f"widen_mlp: expected a TransformerBlock, MLP or gated MLP, "
                        f"got {type(module).__name__}")
    return module


def widen_mlp(module: nn.Module, hidden_dim: int, *, noise: float = 0.0, seed: int = 0) -> Tensor:
    """Widen the hidden layer of an MLP, a gated MLP (SwiGLU ...) or a TransformerBlock's
    feed-forward to ``hidden_dim`` units, in place, keeping the function."""
    ffn = _ffn(module)
    if isinstance(ffn, MLP):
        return widen_units(ffn.fc1, ffn.fc2, hidden_dim, noise=noise, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    index = wider_mapping(ffn.down_proj.in_features, hidden_dim, generator=gen)
    counts = torch.bincount(index, minlength=ffn.down_proj.in_features)
    with torch.no_grad():
        _select_out(ffn.gate_proj, index)
        _select_out(ffn.up_proj, index)
        _select_in(ffn.down_proj, index, counts, noise, gen)
    return index


def widen_heads(module: nn.Module, num_heads: int, *, noise: float = 0.0, seed: int = 0) -> Tensor:
    """Add attention heads (replicas of existing ones, ``head_dim`` kept) to a
    MultiHeadAttention or a TransformerBlock's self-attention, in place, keeping the
    function. Grouped-query attention and ALiBi (whose slopes depend on the head count)
    are refused."""
    attn = module.attn.fn if isinstance(module, TransformerBlock) else module
    if not isinstance(attn, MultiHeadAttention):
        raise SpecError(f"widen_heads: expected a TransformerBlock or MultiHeadAttention, "
                        f"got {type(module).__name__}")
    if attn.num_kv_heads != attn.num_heads:
        raise SpecError(f"widen_heads: grouped-query attention ({attn.num_kv_heads} key/value "
                        f"heads for {attn.num_heads}) is not supported")
    if attn.pos == "alibi":
        raise SpecError("widen_heads: ALiBi slopes depend on the number of heads, so adding "
                        "heads would change the function")
    gen = torch.Generator().manual_seed(seed)
    index = wider_mapping(attn.num_heads, num_heads, generator=gen)
    counts = torch.bincount(index, minlength=attn.num_heads)
    rows = _expand(index, attn.head_dim)
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            _select_out(proj, rows)
        _select_in(attn.out_proj, index, counts, noise, gen)
        if attn.pos_bias is not None:  # per-head relative position bias (rows, H)
            _set(attn.pos_bias, "bias", attn.pos_bias.bias[:, index])
            attn.pos_bias.num_heads = num_heads
    attn.num_heads = attn.num_kv_heads = num_heads
    return index


# --------------------------------------------------------------------------- deepening


def _identity_bn(norm: _BatchNorm) -> None:
    nn.init.ones_(norm.weight) if norm.weight is not None else None
    nn.init.zeros_(norm.bias) if norm.bias is not None else None
    if norm.running_mean is not None:
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)


def _identity_conv(conv: _ConvNd) -> None:
    k = conv.kernel_size
    padding = tuple(d * (s - 1) // 2 for s, d in zip(k, conv.dilation))
    ok = (
        all(s % 2 for s in k) and all(s == 1 for s in conv.stride) and conv.padding == padding
        and conv.in_channels == conv.out_channels and conv.groups in (1, conv.in_channels)
        and not isinstance(conv, nn.ConvTranspose2d)
    )
    if not ok:
        raise SpecError(f"cannot make {conv} the identity: it needs equal channels, odd kernels, "
                        "stride 1, 'same' padding and groups 1 or = channels")
    nn.init.dirac_(conv.weight, groups=conv.groups)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _make_identity(module: nn.Module) -> None:
    """Initialise a shape-preserving ``module`` to compute the identity, in place."""
    if isinstance(module, nn.Linear):
        if module.in_features != module.out_features:
            raise SpecError(f"cannot make {module} the identity: it is not square")
        nn.init.eye_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, _ConvNd):
        _identity_conv(module)
    elif isinstance(module, _BatchNorm):
        _identity_bn(module)
    elif isinstance(module, TransformerBlock):
        residuals = [r for r in (module.attn, module.cross_attn, module.mlp) if r is not None]
        if any(r.mode == "post" for r in residuals):
            raise SpecError("cannot make a post-norm Transformer block the identity "
                            "(norm(x + 0) != x); use norm='pre'")
        for r in residuals:
            _zero_branch(r)
    elif hasattr(module, "zero_init_last") and hasattr(module, "last_norm"):
        skip = getattr(module, "has_skip", getattr(module, "downsample", None) is None)
        if not skip:
            raise SpecError(f"cannot make {type(module).__name__} the identity: it has no skip "
                            "connection (stride or width changes)")
        module.zero_init_last()
        last = module.last_norm
        last = getattr(module, last) if isinstance(last, str) else last()
        if getattr(last, "bias", None) is not None:  # a trained bias would survive the zero
            nn.init.zeros_(last.bias)
    elif isinstance(getattr(module, "conv", None), _ConvNd):  # conv + norm + act
        _identity_conv(module.conv)
        norm = getattr(module, "norm", None)
        if isinstance(norm, _BatchNorm):
            _identity_bn(norm)
        elif not isinstance(norm, (nn.Identity, type(None))):
            raise SpecError(f"cannot make {type(norm).__name__} the identity")
    elif next(module.parameters(), None) is not None:
        raise SpecError(f"cannot initialise {type(module).__name__} as the identity; supported: "
                        "Linear, convolutions, BatchNorm, conv+norm+act, residual blocks, "
                        "pre-norm Transformer blocks")


def _zero_branch(residual: Residual) -> None:
    residual.zero_init_last()
    last_norm = residual.norm2
    if getattr(last_norm, "bias", None) is not None:  # sandwich: norm2(0) = its bias
        nn.init.zeros_(last_norm.bias)


def identity_layer(module: nn.Module) -> nn.Module:
    """A new layer that takes ``module``'s output and computes the identity (Net2DeeperNet):
    ``Linear(n_out, n_out)`` = I, a Dirac convolution of ``module``'s kernel with 'same'
    padding, an identity BatchNorm, or a copy of a shape-preserving block (residual block,
    pre-norm Transformer block, conv + BatchNorm + act) whose branch outputs zero.

    The identity is exact for the layer itself; a following activation (e.g. ReLU) keeps
    the function only where it is the identity on the input (ReLU after ReLU)."""
    factory = {"device": None, "dtype": None}
    weight = next(module.parameters(), None)
    if weight is not None:
        factory = {"device": weight.device, "dtype": weight.dtype}
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            n = module.out_features
            new: nn.Module = type(module)(n, n, bias=module.bias is not None, **factory)
        elif isinstance(module, _ConvNd) and not module.transposed:
            c, k, d = module.out_channels, module.kernel_size, module.dilation
            padding = tuple(di * (s - 1) // 2 for s, di in zip(k, d))
            new = type(module)(c, c, kernel_size=k, padding=padding, dilation=d,
                               bias=module.bias is not None, **factory)
        else:
            new = copy.deepcopy(module)
        _make_identity(new)
    return new


# --------------------------------------------------------------------------- specs


def _consumers(spec: NetworkSpec, node_id: str) -> list[NodeSpec]:
    return [n for n in spec.nodes if node_id in n.inputs]


def _require_network(model: Any, what: str) -> Network:
    if not isinstance(model, Network):
        raise TypeError(f"{what} needs a spec-built Network, got {type(model).__name__}; for "
                        "other modules use widen_units / widen_mlp / widen_heads / identity_layer")
    return model


def _node(spec: NetworkSpec, node_id: str) -> NodeSpec:
    try:
        return spec.node(node_id)
    except KeyError:
        ids = [n.id for n in spec.nodes]
        raise SpecError(f"unknown node {node_id!r}{suggest(node_id, ids)}", path="node") from None


def _rebuild(model: Network, edited: Network, spec: NetworkSpec, seed: int) -> Network:
    """A fresh network for ``spec`` holding ``edited``'s weights (strict: shapes must match)
    and ``model``'s train/eval mode."""
    new = build(spec, seed=seed, **_factory(model))
    new.load_state_dict(edited.state_dict())
    return new.train(model.training)


def _unit_chain(model: Network, node_id: str) -> tuple[list[str], str]:
    """The BatchNorm nodes after ``node_id`` (through parameter-free per-channel nodes) and
    the weight layer that consumes its units."""
    spec = model.spec
    acts = set(layer_table("act"))
    between: list[str] = []
    current = node_id
    while True:
        if current in spec.outputs or current in spec.tie.values():
            raise SpecError(f"node {current!r} is an output: widening it changes the output")
        after = _consumers(spec, current)
        if len(after) != 1 or after[0].merge is not None:
            raise SpecError(f"node {current!r} feeds {[n.id for n in after]}"
                            f"{' through a merge' if after and after[0].merge else ''}: "
                            "widening needs a single consumer without a merge", path=node_id)
        nxt = after[0]
        if nxt.block in CONSUMERS:
            return between, nxt.id
        free = next(model.nodes[nxt.id].parameters(), None) is None
        if not (nxt.block in NORMS or (free and nxt.block in PASS_THROUGH | acts)):
            raise SpecError(f"cannot widen through node {nxt.id!r} ({nxt.block}): it mixes units; "
                            f"widening passes BatchNorm, activations and {sorted(PASS_THROUGH)}")
        if nxt.block in NORMS:
            between.append(nxt.id)
        current = nxt.id


def widen(
    model: Network,
    node: str,
    width: int | None = None,
    *,
    hidden_dim: int | None = None,
    num_heads: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> Network:
    """Net2WiderNet on a spec-built network: a new network with node ``node`` widened.

    ``width`` widens a ``linear`` / ``conv2d`` / ``conv1d`` / ``conv_norm_act`` node (its
    BatchNorm and per-channel successors follow; the next weight layer takes the
    replicated units). ``hidden_dim`` widens the feed-forward and ``num_heads`` adds heads
    of a ``transformer_block`` (or ``mlp`` / ``multi_head_attention``) node. The result's
    ``spec`` is the edited spec; outputs equal the original's in eval mode.
    """
    model = _require_network(model, "widen")
    spec = model.spec
    n = _node(spec, node)
    edited = copy.deepcopy(model)
    params = dict(n.params)
    if width is not None:
        if n.block not in PRODUCERS:
            raise SpecError(f"node {node!r} is a {n.block!r}: width= widens "
                            f"{sorted(PRODUCERS)}; use hidden_dim= / num_heads= for Transformer "
                            "blocks", path=node)
        between, consumer = _unit_chain(model, node)
        widen_units(edited.nodes[node], edited.nodes[consumer], width,
                    between=[edited.nodes[b] for b in between], noise=noise, seed=seed)
        params[PRODUCERS[n.block]] = width
    if hidden_dim is None and num_heads is None and width is None:
        raise SpecError("widen: give width=, hidden_dim= or num_heads=")
    sig = inspect.signature(get_block(n.block)).parameters
    if hidden_dim is not None:
        if "hidden_dim" not in sig:
            raise SpecError(f"block {n.block!r} has no hidden_dim parameter", path=node)
        widen_mlp(edited.nodes[node], hidden_dim, noise=noise, seed=seed)
        params["hidden_dim"] = hidden_dim
    if num_heads is not None:
        if "head_dim" not in sig:
            raise SpecError(f"block {n.block!r} has no head_dim parameter, so its heads cannot "
                            "be added keeping the head size", path=node)
        attn = edited.nodes[node]
        head_dim = (attn.attn.fn if isinstance(attn, TransformerBlock) else attn).head_dim
        widen_heads(attn, num_heads, noise=noise, seed=seed + 1)
        params.update(num_heads=num_heads, head_dim=head_dim)
        params.pop("num_kv_heads", None)
    new_spec = spec.replace_node(node, params=params)
    return _rebuild(model, edited, new_spec, seed)


def _rename_roles(roles: Any, after: str, new_id: str, key: str = "") -> Any:
    """Roles after inserting ``new_id`` behind ``after``: a single node reference (the
    features) and stage outputs move to ``new_id``; other node lists (``blocks``) gain it."""
    if isinstance(roles, str):
        return new_id if roles == after else roles
    if isinstance(roles, (list, tuple)):
        if after in roles and key not in ("stages",):
            i = list(roles).index(after)
            return [*roles[: i + 1], new_id, *roles[i + 1:]]
        return [_rename_roles(r, after, new_id) for r in roles]
    if isinstance(roles, dict) or hasattr(roles, "items"):
        return {(new_id if k == after and key == "reductions" else k):
                _rename_roles(v, after, new_id, k) for k, v in roles.items()}
    return roles


def deepen(
    model: Network,
    after: str,
    *,
    block: str | None = None,
    params: dict[str, Any] | None = None,
    act: str | None = None,
    node_id: str | None = None,
    seed: int = 0,
) -> Network:
    """Net2DeeperNet on a spec-built network: insert an identity-initialised node after
    node ``after`` (its readers, the outputs and the roles move to the new node).

    By default the new node copies ``after``'s block, parameters (``stride`` dropped) and
    context: another residual / Transformer block or conv layer. ``block``/``params`` name
    another (``block="linear"`` with ``act="relu"`` deepens a ReLU MLP). ``act`` appends an
    activation node; ReLU keeps the function where its input is non-negative (after a ReLU).
    """
    model = _require_network(model, "deepen")
    spec = model.spec
    prev = _node(spec, after)
    ids = {n.id for n in spec.nodes}
    new_id = node_id or next(f"{after}_deep{i}" for i in range(len(ids) + 1)
                             if f"{after}_deep{i}" not in ids)
    if new_id in ids:
        raise SpecError(f"node id {new_id!r} already exists", path="node_id")
    if block is None:
        block = prev.block
        params = {k: v for k, v in prev.params.items() if k != "stride"} if params is None \
            else params
        context = dict(prev.context)
    else:
        context = {}
    nodes = [NodeSpec(new_id, block, params or {}, (after,), context=context)]
    if act is not None:
        nodes.append(NodeSpec(f"{new_id}_act", act, {}, (new_id,)))
    last = nodes[-1].id
    body = []
    for n in spec.nodes:
        if after in n.inputs:
            n = NodeSpec(**{**n.to_dict(), "inputs": [last if s == after else s
                                                       for s in n.inputs]})
        body.append(n)
        if n.id == after:
            body.extend(nodes)
    from ..spec import _thaw

    new_spec = spec.replace(
        nodes=tuple(body),
        outputs=tuple(last if o == after else o for o in spec.outputs),
        roles=_rename_roles(_thaw(spec.roles), after, last) if spec.roles else {},
    )
    new = build(new_spec, seed=seed, **_factory(model))
    before, grown = _shape(model, after), _shape(new, last)
    if before != grown:
        raise SpecError(f"the inserted {block!r} node turns shape {before} into {grown}; "
                        "deepening needs a shape-preserving layer", path="params")
    state = new.state_dict()
    state.update(model.state_dict())
    new.load_state_dict(state)
    with torch.no_grad():
        for n in nodes:
            _make_identity(new.nodes[n.id])
    return new.train(model.training)


def _shape(model: Network, node_id: str) -> tuple[int, ...]:
    """Per-sample output shape of node ``node_id`` (inferred when the model was built)."""
    return next(i.shape for i in model.node_info() if i.id == node_id)


def _factory(model: nn.Module) -> dict[str, Any]:
    weight = next(model.parameters(), None)
    return {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
