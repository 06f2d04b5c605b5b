"""The message-passing GNN family builder: GCN, GraphSAGE, GIN, GAT, GATv2, graph transformer
or any PyG convolution, for node or graph classification, as a spec.

Spec (``roles: {kind: gnn, level: node | graph}``): optional positional encoding ``pe``
(``[x, pe]``, computed per graph of ``batch``), then per layer ``conv{i}`` (context ``edge_index``, and
``edge_attr`` when ``edge_dim`` is set), optional ``norm{i}``, ``act{i}`` and ``drop{i}``;
optional jumping knowledge ``jk`` over the layer outputs (Xu et al., 2018: ``cat`` or
``max``); for graph level a ``readout`` pool over ``batch``; then ``head`` (linear).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ShapeError, SpecError
from ..layers._factory import example_tensor
from ..network import build
from ..registry import Example, register_block
from ._graph_builder import GraphBuilder
from ._stages import check_positive
from .gnn import LEVELS, GNNNetwork

__all__ = ["CONVS", "JumpingKnowledge", "gnn", "graph_spec_context"]

#: Layer type name -> registered block.
CONVS = {
    "gcn": "gcn_conv",
    "sage": "sage_conv",
    "gin": "gin_conv",
    "gine": "gine_conv",
    "gat": "gat_conv",
    "gatv2": "gatv2_conv",
    "transformer": "graph_transformer_conv",
    "pyg": "pyg_conv",
}
#: Layer types that take ``edge_attr`` (given ``edge_dim``).
EDGE_CONVS = ("gine", "gat", "gatv2", "transformer")
#: Attention layers: ``heads`` heads of ``hidden_channels // heads`` features, concatenated.
ATTENTION_CONVS = ("gat", "gatv2", "transformer")
PE_BLOCKS = {"laplacian": "laplacian_pe", "random_walk": "random_walk_pe"}
GRAPH_POOL = "graph_pool"
#: The canonical order of a GNN's context (the order of positional context arguments).
CONTEXT_ORDER = ("edge_index", "edge_attr", "edge_weight", "pos", "batch", "num_graphs")


def graph_spec_context(names: Any) -> tuple[str, ...]:
    """``names`` in :data:`CONTEXT_ORDER` (others after, in their order)."""
    names = list(names)
    known = [n for n in CONTEXT_ORDER if n in names]
    return (*known, *[n for n in names if n not in CONTEXT_ORDER])


@register_block("jumping_knowledge")
class JumpingKnowledge(nn.Module):
    """Jumping knowledge (Xu et al., 2018): combine the outputs of every GNN layer,
    ``cat`` (concatenate features) or ``max`` (element-wise maximum). Used with
    ``merge: args`` (one argument per layer).

    Shapes:
        each x: ``(N, F_i)`` -> ``(N, Σ F_i)`` (``cat``) or ``(N, F)`` (``max``, equal ``F_i``).
    """

    MODES = ("cat", "max")

    def __init__(
        self, *, mode: str = "cat", device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise SpecError(f"mode={mode!r} must be one of {self.MODES}", path="mode")
        self.mode = mode

    def reset_parameters(self) -> None:
        """No parameters."""

    def forward(self, *xs: Tensor) -> Tensor:
        if self.mode == "cat":
            return torch.cat(xs, dim=-1)
        widths = {x.shape[-1] for x in xs}
        if len(widths) > 1:
            raise ShapeError(f"jumping knowledge 'max' needs equal widths, got {sorted(widths)}")
        return torch.stack(xs, dim=0).amax(dim=0)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    @classmethod
    def examples(cls) -> list[Example]:
        xs = (example_tensor(3, 4), example_tensor(3, 4, seed=1))
        return [Example({"mode": m}, xs, name=m) for m in cls.MODES]

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]


def _conv_params(conv: str, width: int, heads: int, edge_dim: int | None,
                 conv_args: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"out_channels": width}
    if conv in ATTENTION_CONVS:
        if width % heads:
            raise SpecError(f"hidden_channels={width} is not divisible by heads={heads}",
                            path="heads")
        params = {"out_channels": width // heads, "num_heads": heads}
    if edge_dim is not None:
        params["edge_dim"] = edge_dim
    return {**params, **conv_args}


def gnn(
    *,
    in_channels: int = 16,
    num_classes: int = 2,
    conv: str = "gcn",
    hidden_channels: int = 64,
    num_layers: int = 2,
    level: str = "node",
    readout: str = "mean",
    heads: int = 1,
    edge_dim: int | None = None,
    conv_args: Mapping[str, Any] | None = None,
    act_layer: str = "relu",
    norm_layer: str | Mapping[str, Any] | None = None,
    dropout: float = 0.0,
    jk: str | None = None,
    pe: str | None = None,
    pe_dim: int = 8,
    name: str = "gnn",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> GNNNetwork:
    """The GNN family builder (see the module docstring); returns a :class:`GNNNetwork`.

    ``conv``: a name of :data:`CONVS`; attention layers split ``hidden_channels`` over
    ``heads``; ``conv_args`` go to every layer (``{"conv": "GraphConv"}`` for ``pyg``).
    ``level="graph"`` pools with ``readout`` (``sum``, ``mean``, ``max``) over ``batch``.
    ``jk``: ``None``, ``"cat"`` or ``"max"``. ``pe``: ``None``, ``"laplacian"`` or
    ``"random_walk"`` (``pe_dim`` features concatenated to ``x``).
    """
    for key, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                       ("num_layers", num_layers), ("heads", heads), ("pe_dim", pe_dim)):
        check_positive(key, value)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SpecError(f"num_classes={num_classes!r} must be a positive integer", path="num_classes")
    if conv not in CONVS:
        raise SpecError(f"conv={conv!r} must be one of {sorted(CONVS)}", path="conv")
    if level not in LEVELS:
        raise SpecError(f"level={level!r} must be one of {LEVELS}", path="level")
    if pe is not None and pe not in PE_BLOCKS:
        raise SpecError(f"pe={pe!r} must be None or one of {sorted(PE_BLOCKS)}", path="pe")
    if edge_dim is not None and conv not in EDGE_CONVS:
        raise SpecError(f"edge_dim needs a layer that takes edge features {EDGE_CONVS}, "
                        f"not conv={conv!r}", path="edge_dim")
    b = GraphBuilder(name, {"x": (in_channels,)})
    if pe is not None:
        # [x, pe] in one node (mode concat); batch: the encodings are computed per graph
        b.add("pe", PE_BLOCKS[pe], {"dim": pe_dim, "mode": "concat"},
              context=["edge_index", "batch"])
    conv_context = ["edge_index", "edge_attr"] if edge_dim is not None else ["edge_index"]
    params = _conv_params(conv, hidden_channels, heads, edge_dim, dict(conv_args or {}))
    layers = []
    for i in range(num_layers):
        b.add(f"conv{i}", CONVS[conv], params, context=conv_context)
        if norm_layer is not None:
            b.add_layer(f"norm{i}", norm_layer)
        b.add(f"act{i}", act_layer)
        if dropout:
            b.add(f"drop{i}", "dropout", {"p": dropout})
        layers.append(b.last)
    if jk is not None:
        b.add("jk", "jumping_knowledge", {"mode": jk}, inputs=layers, merge="args")
    if level == "graph":
        b.add("readout", GRAPH_POOL, {"reduce": readout}, context=["batch", "num_graphs"])
    b.add("head", "linear", {"out_features": num_classes})
    spec = b.make_spec({"kind": "gnn", "level": level})
    spec = spec.replace(context=graph_spec_context(spec.context))
    return build(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]
