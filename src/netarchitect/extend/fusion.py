"""Feature-level fusion of two backbones into one classifier.

Each backbone contributes its features (``forward_features``): pooled vectors (the input of
its classifier) for ``"concat"`` and ``"gated"`` fusion, tokens for ``"cross_attention"``.

* ``concat``: ``head([f_a; f_b])``;
* ``gated``: ``g = σ(W_g [P_a f_a; P_b f_b])``, ``head(g ⊙ P_a f_a + (1 - g) ⊙ P_b f_b)``
  (projections ``P`` to a common ``dim``; the highway-style carry gate of Arevalo et al.'s
  gated multimodal unit);
* ``cross_attention``: the tokens of ``a`` attend to those of ``b``
  (``t_a + MHA(t_a, t_b)``), mean-pooled, then ``head`` (feature maps become tokens through
  a 1×1 patch embedding in specs, or by flattening the grid in modules).

When both backbones are spec-built classifiers reading inputs of the same shape,
:func:`fuse_backbones` returns a spec-built
:class:`~netarchitect.models._classifier.ClassifierNetwork`: the two backbones' feature
nodes (ids prefixed ``a_`` / ``b_``, one shared input), the fusion nodes and a new head,
with the backbones' trained weights copied in. ``fused(x, return_nodes=["a_<features>",
...])`` still gives each backbone's features. Otherwise it returns a :class:`FusionModel`
(an ``nn.Module`` over the two modules, optionally with two inputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..layers.attention import MultiHeadAttention
from ..models._classifier import ClassifierNetwork
from ..network import build
from ..spec import InputSpec, NetworkSpec, NodeSpec
from .net2net import _shape

__all__ = ["FUSION_METHODS", "FusionModel", "fuse_backbones", "fused_spec"]

FUSION_METHODS = ("concat", "gated", "cross_attention")


def _check(method: str, num_classes: int) -> None:
    if method not in FUSION_METHODS:
        raise SpecError(f"unknown fusion method {method!r}; use one of {', '.join(FUSION_METHODS)}",
                        path="method")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SpecError(f"num_classes={num_classes!r} must be a positive integer",
                        path="num_classes")


# --------------------------------------------------------------------------- specs


def _prefixed(model: ClassifierNetwork, prefix: str, target: str, input_name: str) -> list[NodeSpec]:
    """The nodes ``target`` needs, ids prefixed, the model's input renamed ``input_name``."""
    spec, own_input = model.spec, model.spec.inputs[0].name
    out = []
    for node_id in model.upstream_nodes([target]):
        node = spec.node(node_id)
        inputs = [input_name if s == own_input else prefix + s for s in node.inputs]
        out.append(NodeSpec(**{**node.to_dict(), "id": prefix + node_id, "inputs": inputs}))
    return out


def _fusion_nodes(
    method: str, a: str, b: str, shapes: Mapping[str, tuple[int, ...]], dim: int | None,
    num_heads: int,
) -> list[NodeSpec]:
    """Fusion nodes reading node ``a`` and ``b`` (of the given per-sample shapes), ending at
    node ``fusion`` (the features of the fused classifier)."""
    if method == "concat":
        return [NodeSpec("fusion", "identity", {}, (a, b), merge="concat", merge_dim=-1)]
    if method == "gated":
        d = dim or max(shapes[a][-1], shapes[b][-1])
        return [
            NodeSpec("fusion_a", "linear", {"out_features": d}, (a,)),
            NodeSpec("fusion_b", "linear", {"out_features": d}, (b,)),
            NodeSpec("fusion_cat", "identity", {}, ("fusion_a", "fusion_b"), merge="concat",
                     merge_dim=-1),
            NodeSpec("fusion_gate", "linear", {"out_features": d}, ("fusion_cat",)),
            NodeSpec("fusion", "identity", {}, ("fusion_a", "fusion_b", "fusion_gate"),
                     merge="gate"),
        ]
    nodes: list[NodeSpec] = []
    tokens = {}
    for name in (a, b):
        if len(shapes[name]) == 3:  # (C, H, W) map -> (H·W, C) tokens
            nodes.append(NodeSpec(f"{name}_tokens", "patch_embed",
                                  {"dim": shapes[name][0], "patch_size": 1}, (name,)))
            tokens[name] = f"{name}_tokens"
        elif len(shapes[name]) == 2:
            tokens[name] = name
        else:
            raise SpecError(f"cross-attention fusion needs token or map features; node {name!r} "
                            f"gives shape {shapes[name]}", path="method")
    ta, tb = tokens[a], tokens[b]
    context_dim = shapes[b][0] if len(shapes[b]) == 3 else shapes[b][-1]
    return [
        *nodes,
        NodeSpec("fusion_attn", "multi_head_attention",
                 {"num_heads": num_heads, "context_dim": context_dim}, (ta, tb), merge="args"),
        NodeSpec("fusion", "identity", {}, (ta, "fusion_attn"), merge="add"),
    ]


def fused_spec(
    a: ClassifierNetwork,
    b: ClassifierNetwork,
    *,
    num_classes: int,
    method: str = "concat",
    dim: int | None = None,
    num_heads: int = 4,
    name: str | None = None,
) -> NetworkSpec:
    """The spec of the fusion of two spec-built classifiers with the same input shape
    (see the module docstring); raises :class:`SpecError` when they cannot share a spec."""
    _check(method, num_classes)
    for tag, m in (("a", a), ("b", b)):
        if not isinstance(m, ClassifierNetwork) or len(m.spec.inputs) != 1:
            raise SpecError(f"backbone {tag} is not a single-input spec-built classifier",
                            path=tag)
    ia, ib = a.spec.inputs[0], b.spec.inputs[0]
    if (ia.shape, ia.dtype) != (ib.shape, ib.dtype):
        raise SpecError(f"backbones read different inputs: {ia.shape} {ia.dtype} vs {ib.shape} "
                        f"{ib.dtype}; use FusionModel with two inputs", path="inputs")
    pooled = method != "cross_attention"
    ends = {}
    nodes: list[NodeSpec] = []
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, m in (("a_", a), ("b_", b)):
        target = m.pre_logits_node if pooled else m.features_node
        nodes += _prefixed(m, prefix, target, "x")
        ends[prefix] = prefix + target
        shapes[prefix + target] = _shape(m, target)
        if pooled and len(shapes[prefix + target]) != 1:
            raise SpecError(f"backbone {prefix[0]}'s pre-logits {target!r} have shape "
                            f"{shapes[prefix + target]}, not a pooled vector", path=prefix[0])
    nodes += _fusion_nodes(method, ends["a_"], ends["b_"], shapes, dim, num_heads)
    head_in = "fusion"
    if not pooled:
        nodes.append(NodeSpec("fusion_pool", "token_pool", {"pool_type": "avg"}, ("fusion",)))
        head_in = "fusion_pool"
    nodes.append(NodeSpec("head", "linear", {"out_features": num_classes}, (head_in,)))
    kept = {n.id for n in nodes}
    tie = {p + k: p + v for p, m in (("a_", a), ("b_", b)) for k, v in m.spec.tie.items()
           if {p + k.split(".")[0], p + v.split(".")[0]} <= kept}  # ties of dropped heads go
    context = tuple(dict.fromkeys([*a.spec.context, *b.spec.context]))
    return NetworkSpec(
        name or f"{a.spec.name}+{b.spec.name}",
        (InputSpec("x", ia.shape, ia.dtype),),
        tuple(nodes),
        ("head",),
        description=f"{method} fusion of {a.spec.name} and {b.spec.name}",
        context=context,
        tie=tie,
        roles={"kind": "classifier", "features": "fusion", "stages": [], "reductions": {}},
    )


def _copy_backbone(fused: nn.Module, model: nn.Module, prefix: str) -> None:
    own = fused.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        node = key.split(".")[1]
        new = f"nodes.{prefix}{node}{key[len('nodes.') + len(node):]}"
        if new in own:
            state[new] = value
    fused.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------- modules


def _pool(f: Tensor) -> Tensor:
    """Pooled vector of features: mean over space ``(B, C, H, W)`` or tokens ``(B, T, D)``."""
    if f.dim() == 4:
        return f.mean((-2, -1))
    return f.mean(1) if f.dim() == 3 else f


def _tokens(f: Tensor) -> Tensor:
    """Features as tokens ``(B, T, D)``: a map's grid flattened, a vector as one token."""
    if f.dim() == 4:
        return f.flatten(2).transpose(1, 2)  # (B, H·W, C)
    return f if f.dim() == 3 else f.unsqueeze(1)


def _features(model: nn.Module, x: Any) -> Tensor:
    fn = getattr(model, "forward_features", None)
    return fn(x) if fn is not None else model(x)


class FusionModel(nn.Module):
    """Two backbones (any modules; ``forward_features`` is used where present) fused by
    ``method`` into one classifier. ``dims`` are the backbones' feature widths (default:
    their ``num_features``). ``forward(x_a, x_b=None)``: ``x_b`` defaults to ``x_a``.

    Shapes:
        x_a, x_b: each backbone's input -> ``(B, num_classes)``.
    """

    def __init__(
        self,
        a: nn.Module,
        b: nn.Module,
        *,
        num_classes: int,
        method: str = "concat",
        dim: int | None = None,
        num_heads: int = 4,
        dims: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        _check(method, num_classes)
        if dims is None:
            widths = [getattr(m, "num_features", None) for m in (a, b)]
            if None in widths:
                raise SpecError("pass dims=(features of a, features of b): a backbone has no "
                                "num_features", path="dims")
            dims = (int(widths[0]), int(widths[1]))  # type: ignore[arg-type]
        self.a, self.b, self.method = a, b, method
        da, db = dims
        self.proj_a = self.proj_b = self.gate = self.attn = None
        if method == "concat":
            self.num_features = da + db
        elif method == "gated":
            d = dim or max(da, db)
            self.proj_a, self.proj_b = nn.Linear(da, d), nn.Linear(db, d)
            self.gate = nn.Linear(2 * d, d)
            self.num_features = d
        else:
            self.attn = MultiHeadAttention(da, num_heads, context_dim=db)
            self.num_features = da
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x_a: Any, x_b: Any = None) -> Tensor:
        """The fused feature vector ``(B, num_features)``."""
        fa = _features(self.a, x_a)
        fb = _features(self.b, x_a if x_b is None else x_b)
        if self.method == "concat":
            return torch.cat([_pool(fa), _pool(fb)], -1)
        if self.method == "gated":
            pa, pb = self.proj_a(_pool(fa)), self.proj_b(_pool(fb))
            g = torch.sigmoid(self.gate(torch.cat([pa, pb], -1)))
            return g * pa + (1 - g) * pb
        ta = _tokens(fa)
        return (ta + self.attn(ta, _tokens(fb))).mean(1)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x_a: Any, x_b: Any = None) -> Tensor:
        return self.head(self.forward_features(x_a, x_b))


def fuse_backbones(
    a: nn.Module,
    b: nn.Module,
    *,
    num_classes: int,
    method: str = "concat",
    dim: int | None = None,
    num_heads: int = 4,
    seed: int = 0,
    dims: tuple[int, int] | None = None,
) -> nn.Module:
    """Fuse two backbones into one classifier (see the module docstring): a spec-built
    ``ClassifierNetwork`` with both backbones' weights when both are spec-built classifiers
    of the same input, else a :class:`FusionModel`. New layers are initialised from
    ``seed``."""
    _check(method, num_classes)
    same_input = (
        isinstance(a, ClassifierNetwork) and isinstance(b, ClassifierNetwork)
        and len(a.spec.inputs) == len(b.spec.inputs) == 1
        and (a.spec.inputs[0].shape, a.spec.inputs[0].dtype)
        == (b.spec.inputs[0].shape, b.spec.inputs[0].dtype)
    )
    if not same_input:
        torch.manual_seed(seed)
        return FusionModel(a, b, num_classes=num_classes, method=method, dim=dim,
                           num_heads=num_heads, dims=dims)
    spec = fused_spec(a, b, num_classes=num_classes, method=method, dim=dim,  # type: ignore[arg-type]
                      num_heads=num_heads)
    weight = next(a.parameters())
    fused = build(spec, seed=seed, device=weight.device, dtype=weight.dtype)
    _copy_backbone(fused, a, "a_")
    _copy_backbone(fused, b, "b_")
    return fused.train(a.training)

