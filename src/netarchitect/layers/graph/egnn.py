"""E(n)-equivariant graph layer, EGNN (Satorras, Hoogeboom & Welling 2021).

Per edge ``j -> i``: ``m_ij = φ_e(h_i, h_j, ‖x_i - x_j‖², e_ij)``; coordinates
``x_i' = x_i + AGG_j (x_i - x_j) · φ_x(m_ij)``; features ``h_i' = φ_h(h_i, Σ_j m_ij)``
(+ ``h_i``).
Rotations, reflections and translations of ``x`` move ``x'`` the same way and leave ``h'``
unchanged. Made robust where the reference implementations blow up (lucidrains/egnn-pytorch
#7, #35: NaN with coincident points or deep stacks): the distance enters squared (a smooth
function), the direction is normalised ``(x_i - x_j) / (‖x_i - x_j‖ + norm_eps)`` (the norm's
gradient at 0 is 0, not NaN; ``norm_eps = 1`` as EDM's ``norm_constant``) or the weight is
``tanh``-bounded, and coordinate updates are averaged over the neighbours by default.

The spec form packs the state in ONE tensor ``(N, F + pos_dim)``: node features first, the
last ``pos_dim`` columns the coordinates (``pack_pos`` builds it from ``x`` and ``pos``).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from ...errors import SpecError
from ...registry import Example, register_block
from .._factory import (
    LayerType,
    check_choice,
    check_non_negative,
    check_positive_int,
    example_tensor,
)
from ..activation import get_act_layer
from ..basic import Linear
from .attention import _edge_features, edge_layout
from .checks import GraphInputError, check_finite
from .conv import example_graph
from .message_passing import resolve_edge_index

__all__ = ["EGNNLayer"]

Device = torch.device | str | None
Dtype = torch.dtype | None

_SKIP = {"batch_independence": "message passing couples the nodes (the batch dimension)"}
COORD_UPDATES = ("normalize", "tanh", "none")


def _mlp(sizes: list[int], act: LayerType, factory: dict, last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(Linear(a, b, **factory))
        if i < len(sizes) - 2 or last_act:
            layers.append(get_act_layer(act)(**factory))
    return nn.Sequential(*layers)


@register_block("egnn_layer", kind="graph_conv")
class EGNNLayer(nn.Module):
    """EGNN layer (Satorras et al. 2021), ``E(pos_dim)``-equivariant.

    ``φ_e``: ``[h_i, h_j, ‖d‖², e_ij] -> hidden -> hidden`` (two linear layers, ``act_layer``
    after each); ``φ_x``: ``hidden -> hidden -> 1`` (last layer initialised small, as the
    reference code); ``φ_h``: ``[h_i, Σ_j m_ij] -> hidden -> out_channels``. With
    ``d = x_i - x_j``: ``coord_update="normalize"`` moves along ``d / (‖d‖ + norm_eps)``
    weighted by ``φ_x``; ``"tanh"`` along ``d · tanh(φ_x) · coords_range``; ``"none"`` along
    ``d · φ_x`` (the paper). ``coord_aggr`` ``"mean"`` (the paper's ``C = 1/(M-1)``) or
    ``"sum"``; ``aggr`` (features) ``"sum"`` or ``"mean"``. ``residual`` adds ``h_i`` when
    ``in_channels == out_channels``. ``update_coords=False`` keeps the coordinates.

    Call forms:
        * spec / packed: ``layer(x, edge_index, edge_attr)`` with ``x`` ``(N, in_channels +
          pos_dim)`` (coordinates last) -> ``(N, out_channels + pos_dim)``;
        * ``layer(h, edge_index, edge_attr, pos=pos)`` or ``layer.forward_pair(h, pos,
          edge_index, edge_attr)`` -> ``(h', pos')``.

    ``in_channels`` is the FEATURE width (a spec node must give it: the shape probe would
    fill in the packed width).

    Shapes:
        ``h`` ``(N, in_channels)``, ``pos`` ``(N, pos_dim)``, ``edge_index`` ``(2, E)``,
        ``edge_attr`` ``(E, edge_dim)`` -> ``(N, out_channels)``, ``(N, pos_dim)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        pos_dim: int = 3,
        hidden_channels: int | None = None,
        edge_dim: int | None = None,
        act_layer: LayerType = "silu",
        aggr: str = "sum",
        coord_aggr: str = "mean",
        coord_update: str = "normalize",
        norm_eps: float = 1.0,
        coords_range: float = 15.0,
        residual: bool = True,
        update_coords: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        hidden = hidden_channels or out_channels
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("hidden_channels", hidden), ("pos_dim", pos_dim)):  # fmt: skip
            check_positive_int(name, value)
        if edge_dim is not None:
            check_positive_int("edge_dim", edge_dim)
        check_choice("aggr", aggr, ("sum", "mean"))
        check_choice("coord_aggr", coord_aggr, ("sum", "mean"))
        check_choice("coord_update", coord_update, COORD_UPDATES)
        check_non_negative("norm_eps", norm_eps)
        if not norm_eps > 0:
            raise SpecError(
                f"norm_eps={norm_eps!r} must be positive (coincident points divide by it)"
            )
        check_non_negative("coords_range", coords_range)
        self.in_channels, self.out_channels, self.pos_dim = in_channels, out_channels, pos_dim
        self.edge_dim, self.aggr, self.coord_aggr = edge_dim, aggr, coord_aggr
        self.coord_update, self.norm_eps, self.coords_range = coord_update, norm_eps, coords_range
        self.residual = residual and in_channels == out_channels
        self.update_coords = update_coords
        factory = {"device": device, "dtype": dtype}
        edge_in = 2 * in_channels + 1 + (edge_dim or 0)
        self.edge_mlp = _mlp([edge_in, hidden, hidden], act_layer, factory, last_act=True)
        self.node_mlp = _mlp([in_channels + hidden, hidden, out_channels], act_layer, factory)
        self.coord_mlp = _mlp([hidden, hidden, 1], act_layer, factory) if update_coords else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for mlp in (self.edge_mlp, self.node_mlp, self.coord_mlp):
            for m in mlp or ():
                if isinstance(m, Linear):
                    m.reset_parameters()
        if self.coord_mlp is not None:  # small coordinate steps at first (reference code)
            last = self.coord_mlp[-1]
            nn.init.xavier_uniform_(last.weight, gain=0.001)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, pos_dim={self.pos_dim}, "
            f"coord_update={self.coord_update!r}, coord_aggr={self.coord_aggr!r}"
        )

    @classmethod
    def examples(cls) -> list[Example]:
        ei = example_graph()
        packed = (example_tensor(6, 4 + 3),)
        kw = {"in_channels": 4, "out_channels": 4}
        edges = {"edge_index": ei, "edge_attr": example_tensor(ei.shape[1], 2, seed=1)}
        return [
            Example(kw, packed, _SKIP, {"edge_index": ei}, "packed"),
            Example({**kw, "out_channels": 5, "edge_dim": 2, "coord_update": "tanh",
                     "coord_aggr": "sum", "aggr": "mean"}, packed, _SKIP, edges, "edges_tanh"),
            Example({**kw, "pos_dim": 2, "coord_update": "none"}, (example_tensor(6, 6),), _SKIP,
                    {"edge_index": ei}, "plain_2d"),
        ]  # fmt: skip

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        *,
        pos: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        if pos is not None:
            return self.forward_pair(x, pos, edge_index, edge_attr)
        width = self.in_channels + self.pos_dim
        if x.dim() != 2 or x.shape[1] != width:
            raise GraphInputError(
                f"x: packed EGNN input needs in_channels + pos_dim = {self.in_channels} + "
                f"{self.pos_dim} = {width} columns (features, then coordinates), got shape "
                f"{tuple(x.shape)}; in a spec, set in_channels to the feature width"
            )
        h, p = self.forward_pair(
            x[:, : self.in_channels], x[:, self.in_channels :], edge_index, edge_attr
        )
        return torch.cat([h, p], dim=1)

    def forward_pair(
        self,
        h: Tensor,
        pos: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(h', pos')`` from features ``h`` ``(N, in_channels)`` and coordinates ``pos``."""
        n = h.shape[0]
        if h.dim() != 2 or h.shape[1] != self.in_channels:
            raise GraphInputError(
                f"h: expected shape (N, {self.in_channels}), got {tuple(h.shape)}"
            )
        if not isinstance(pos, Tensor) or tuple(pos.shape) != (n, self.pos_dim):
            got = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
            raise GraphInputError(f"pos: expected shape ({n}, {self.pos_dim}), got {got}")
        check_finite(pos, "pos")
        edge_index = resolve_edge_index(edge_index, h)
        edge_attr = _edge_features(edge_attr, edge_index, self.edge_dim, h)
        if edge_attr is None and self.edge_dim:  # no edges (e.g. the spec probe): (0, edge_dim)
            edge_attr = h.new_zeros(edge_index.shape[1], self.edge_dim)
        lay = edge_layout(edge_index, n, h)
        diff = lay.gather_dst(pos) - lay.gather_src(pos)  # (E, d): x_i - x_j
        dist2 = diff.square().sum(-1, keepdim=True)  # (E, 1), smooth at 0
        parts = [lay.gather_dst(h), lay.gather_src(h), dist2]
        if edge_attr is not None:
            parts.append(lay.to_layout(edge_attr))
        m = self.edge_mlp(torch.cat(parts, dim=-1))  # (E, hidden)
        agg = lay.segment_sum(m)
        if self.aggr == "mean" or self.coord_aggr == "mean":
            count = lay.segment_sum(torch.ones_like(dist2)).clamp(min=1)  # (N, 1)
            if self.aggr == "mean":
                agg = agg / count
        out = self.node_mlp(torch.cat([h, agg], dim=-1))
        if self.residual:
            out = out + h
        if self.coord_mlp is None:
            return out, pos
        w = self.coord_mlp(m)  # (E, 1)
        if self.coord_update == "normalize":
            step = diff / (torch.linalg.vector_norm(diff, dim=-1, keepdim=True) + self.norm_eps) * w
        elif self.coord_update == "tanh":
            step = diff * torch.tanh(w) * self.coords_range
        else:
            step = diff * w
        shift = lay.segment_sum(step)
        if self.coord_aggr == "mean":
            shift = shift / count
        return out, pos + shift
