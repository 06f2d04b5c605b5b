"""EGNN regressor (Satorras et al., 2021): E(n)-equivariant message passing on node features
and coordinates, as a spec.

``egnn_layer`` nodes work on the packed form ``[h, pos]`` ``(N, F + d)``; ``pack_pos``
appends the ``pos`` context to ``x``, ``take_columns`` splits the result into features
(through a linear ``head``) and coordinates. The network returns ``(features, coordinates)``:
the features are invariant and the coordinates equivariant to rotations, reflections and
translations of ``pos``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..layers.graph.checks import GraphInputError
from ..network import build
from ..registry import Example, register_block, register_model
from ._graph_builder import GraphBuilder
from ._stages import check_positive
from .gnn import GNNNetwork
from .gnn_builder import graph_spec_context
from .gnn_models import example_graph

__all__ = ["PackPos", "TakeColumns", "egnn", "egnn_regressor"]


@register_block("pack_pos")
class PackPos(nn.Module):
    """``[x, pos]``: node features with their coordinates appended (the packed input of
    ``egnn_layer``). ``pos`` is required on real tensors; shape inference (``meta``, no
    context) uses zeros.

    Shapes:
        x: ``(N, F)``, pos: ``(N, pos_dim)`` -> ``(N, F + pos_dim)``.
    """

    def __init__(
        self, *, pos_dim: int = 3, device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive("pos_dim", pos_dim)
        self.pos_dim = pos_dim

    def reset_parameters(self) -> None:
        """No parameters."""

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        if pos is None:
            if x.device.type != "meta":
                raise GraphInputError("pos is required: pass the node coordinates (N, "
                                      f"{self.pos_dim})")
            pos = x.new_zeros(x.shape[0], self.pos_dim)
        if pos.shape != (x.shape[0], self.pos_dim):
            raise GraphInputError(f"pos: expected shape ({x.shape[0]}, {self.pos_dim}), "
                                  f"got {tuple(pos.shape)}")
        return torch.cat([x, pos.to(x.dtype)], dim=-1)

    def extra_repr(self) -> str:
        return f"pos_dim={self.pos_dim}"

    @classmethod
    def example(cls) -> Example:
        return Example({}, (example_tensor(4, 2), example_tensor(4, 3, seed=1)))


@register_block("take_columns")
class TakeColumns(nn.Module):
    """Feature columns ``start:stop`` of the input (``x[..., start:stop]``).

    Shapes:
        x: ``(N, F)`` -> ``(N, stop - start)``.
    """

    def __init__(
        self, *, start: int = 0, stop: int | None = None,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise SpecError(f"start={start!r} must be an integer >= 0", path="start")
        if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int)
                                 or stop <= start):
            raise SpecError(f"stop={stop!r} must be an integer > start={start}", path="stop")
        self.start, self.stop = start, stop

    def reset_parameters(self) -> None:
        """No parameters."""

    def forward(self, x: Tensor) -> Tensor:
        stop = x.shape[-1] if self.stop is None else self.stop
        if stop > x.shape[-1]:
            raise SpecError(f"take_columns stop={stop} exceeds the {x.shape[-1]} columns",
                            path="stop")
        return x[..., self.start : stop]

    def extra_repr(self) -> str:
        return f"start={self.start}, stop={self.stop}"

    @classmethod
    def example(cls) -> Example:
        return Example({"start": 1, "stop": 3}, (example_tensor(2, 4),))


def egnn(
    *,
    in_channels: int = 16,
    out_channels: int = 1,
    hidden_channels: int = 64,
    num_layers: int = 4,
    pos_dim: int = 3,
    edge_dim: int | None = None,
    layer_args: dict[str, Any] | None = None,
    name: str = "egnn",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> GNNNetwork:
    """The EGNN family builder: ``num_layers`` ``egnn_layer`` nodes of ``hidden_channels``
    features on ``pos_dim``-D coordinates (``edge_dim`` edge features), a linear feature
    ``head`` to ``out_channels`` and the coordinates: returns ``(features, coordinates)``."""
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels),
                       ("hidden_channels", hidden_channels), ("num_layers", num_layers),
                       ("pos_dim", pos_dim)):
        check_positive(key, value)
    b = GraphBuilder(name, {"x": (in_channels,)})
    b.add("pack", "pack_pos", {"pos_dim": pos_dim}, context=["pos"])
    context = ["edge_index", "edge_attr"] if edge_dim is not None else ["edge_index"]
    extra = {"edge_dim": edge_dim} if edge_dim is not None else {}
    width = in_channels
    for i in range(num_layers):
        params = {"in_channels": width, "out_channels": hidden_channels, "pos_dim": pos_dim,
                  **extra, **dict(layer_args or {})}
        b.add(f"egnn{i}", "egnn_layer", params, context=context)
        width = hidden_channels
    last = b.last
    b.add("features", "take_columns", {"start": 0, "stop": hidden_channels}, inputs=[last])
    b.add("head", "linear", {"out_features": out_channels})
    b.add("coords", "take_columns", {"start": hidden_channels}, inputs=[last])
    spec = b.make_spec({"kind": "gnn", "level": "node"}, outputs=["head", "coords"])
    spec = spec.replace(context=graph_spec_context(spec.context))
    return build(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


def _example() -> Example:
    x, edge_index, _, _ = example_graph(4)
    pos = example_tensor(x.shape[0], 3, seed=1)
    skip = {"batch_independence": "message passing mixes the nodes of a graph"}
    kwargs = {"in_channels": 4, "out_channels": 2, "hidden_channels": 8, "num_layers": 2}
    return Example(kwargs, (x, edge_index, pos), skip=skip)


@register_model("egnn_regressor", example=_example)
def egnn_regressor(**kwargs: Any) -> GNNNetwork:
    """EGNN regressor (Satorras et al., N-body setting): 4 layers of 64 features on 3-D
    coordinates; returns ``(features, coordinates)``."""
    return egnn(**{"hidden_channels": 64, "num_layers": 4, "name": "egnn_regressor", **kwargs})
