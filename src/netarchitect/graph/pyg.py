"""PyTorch Geometric interop: its ``Data``/``Batch`` objects as :class:`GraphBatch`, and any of
its convolutions as a spec node (``pyg_conv``).

``torch_geometric`` is optional (the ``graph`` extra): it is imported only when one of
these is used, and its absence is a clear error, not an ``ImportError`` at import time.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import NetArchitectError, SpecError, suggest
from ..layers._factory import check_positive_int, example_tensor
from ..registry import Example, register_block
from .batch import Graph, GraphBatch

__all__ = ["PygConv", "data_to_graph", "from_pyg", "is_pyg_data", "require_pyg"]

_FIELDS = ("x", "edge_index", "edge_attr", "edge_weight", "pos", "y")


def require_pyg(what: str = "this") -> Any:
    """The ``torch_geometric`` module, or a :class:`NetArchitectError` saying how to get it."""
    try:
        return importlib.import_module("torch_geometric")
    except ImportError:
        raise NetArchitectError(
            f"{what} needs torch_geometric: pip install 'netarchitect[graph]' "
            "(or pip install torch_geometric)"
        ) from None


def is_pyg_data(obj: Any) -> bool:
    """Whether ``obj`` is a PyG ``Data``/``Batch``. PyG is never imported to say no (importing
    it pulls in ``transformers``: seconds per process): an object cannot be PyG data unless
    PyG was imported already."""
    if isinstance(obj, Tensor) or "torch_geometric" not in sys.modules:
        return False
    from torch_geometric.data import Data

    return isinstance(obj, Data)


def _data_fields(data: Any) -> dict[str, Any]:
    out = {key: getattr(data, key, None) for key in _FIELDS}
    return {k: v for k, v in out.items() if isinstance(v, Tensor)}


def from_pyg(data: Any) -> GraphBatch:
    """A PyG ``Data`` (one graph) or ``Batch`` (several) as a :class:`GraphBatch`."""
    require_pyg("from_pyg")
    from torch_geometric.data import Batch

    if not is_pyg_data(data):
        raise TypeError(f"expected a torch_geometric Data or Batch, got {type(data).__name__}")
    if not isinstance(data, Batch):
        return GraphBatch.from_graphs([data_to_graph(data)])
    fields = _data_fields(data)
    fields["edge_index"] = fields.get("edge_index", torch.empty(2, 0, dtype=torch.long))
    y_sizes = None
    if "y" in fields and "y" in data._slice_dict:
        y_sizes = tuple(torch.diff(data._slice_dict["y"]).tolist())
    batch = GraphBatch(
        batch=data.batch, ptr=data.ptr, num_graphs=int(data.num_graphs), y_sizes=y_sizes,
        **fields,
    )
    batch.validate()
    return batch


def data_to_graph(data: Any) -> Graph:
    """A PyG ``Data`` (one graph) as a :class:`Graph`."""
    return Graph(**_data_fields(data), num_nodes=int(data.num_nodes or 0))


def graph_to_data(graph: Graph) -> Any:
    """A :class:`Graph` as a PyG ``Data``."""
    require_pyg("to_pyg")
    from torch_geometric.data import Data

    fields = {k: getattr(graph, k) for k in _FIELDS if getattr(graph, k) is not None}
    return Data(**fields, num_nodes=graph.num_nodes)


def batch_to_pyg(batch: GraphBatch) -> Any:
    """A :class:`GraphBatch` as a PyG ``Batch`` (built by ``Batch.from_data_list``)."""
    require_pyg("to_pyg")
    from torch_geometric.data import Batch

    return Batch.from_data_list([graph_to_data(g) for g in batch.to_graphs()])


def _conv_class(name: str) -> type[nn.Module]:
    pyg_nn = require_pyg(f"pyg_conv(conv={name!r})").nn
    from torch_geometric.nn.conv import MessagePassing

    convs = sorted(
        n for n, c in vars(pyg_nn).items()
        if isinstance(c, type) and issubclass(c, MessagePassing) and n.endswith("Conv")
    )
    cls = getattr(pyg_nn, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SpecError(
            f"conv={name!r} is not a torch_geometric.nn convolution{suggest(str(name), convs)}",
            path="conv",
        )
    return cls


@register_block("pyg_conv", kind="graph_conv")
class PygConv(nn.Module):
    """Any ``torch_geometric.nn`` convolution as a spec node: ``conv`` names the class,
    ``in_channels``/``out_channels`` and ``args`` go to its constructor (channel arguments
    only where it takes them).

    ``forward(x, edge_index=None, edge_attr=None, edge_weight=None)`` calls the PyG layer
    with ``edge_index`` (none: an empty graph) and the edge tensor it accepts. On the
    ``meta`` device (shape inference), where many PyG layers cannot run, the output shape
    comes from one run of a CPU copy on a 2-node graph.

    Shapes:
        x: ``(N, in_channels)``, edge_index: ``(2, E)`` -> ``(N, out)`` (``out`` as the PyG
        layer gives it: ``heads * out_channels`` for a concatenating attention layer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        conv: str = "GCNConv",
        args: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        cls = _conv_class(conv)
        params = inspect.signature(cls.__init__).parameters
        kwargs = dict(args or {})
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if key in params:
                kwargs[key] = value
        self._cls, self._kwargs = cls, kwargs
        self._edge_kw = next((k for k in ("edge_attr", "edge_weight")
                              if k in inspect.signature(cls.forward).parameters), None)
        try:
            with torch.device(device or torch.get_default_device()):
                self.conv = cls(**kwargs)
        except TypeError as exc:
            raise SpecError(f"conv={conv!r}: {exc}", path="args") from None
        if dtype is not None:
            self.conv.to(dtype)
        self.conv_name = conv
        self.in_channels, self.out_channels = in_channels, out_channels
        self._out_shape: tuple[int, ...] | None = None

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def _meta_output(self, x: Tensor) -> Tensor:
        if self._out_shape is None:
            probe = self._cls(**self._kwargs)
            with torch.no_grad():
                y = self._call(probe, torch.zeros(2, x.shape[-1]),
                               torch.empty(2, 0, dtype=torch.long), None)
            self._out_shape = tuple(y.shape[1:])
        return x.new_empty(x.shape[0], *self._out_shape)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
    ) -> Tensor:
        if x.device.type == "meta":
            return self._meta_output(x)
        if edge_index is None:
            edge_index = torch.empty(2, 0, dtype=torch.long, device=x.device)
        return self._call(self.conv, x, edge_index, edge_attr if edge_attr is not None else edge_weight)

    def _call(self, conv: nn.Module, x: Tensor, edge_index: Tensor, edge: Tensor | None) -> Tensor:
        edge_dim = getattr(conv, "edge_dim", None)
        if edge is None and isinstance(edge_dim, int) and edge_dim > 0:  # no edges: no features
            edge = x.new_zeros(edge_index.shape[1], edge_dim)
        if edge is not None and self._edge_kw is not None:
            return conv(x, edge_index, **{self._edge_kw: edge})
        return conv(x, edge_index)

    def extra_repr(self) -> str:
        return f"conv={self.conv_name!r}"

    @classmethod
    def example(cls) -> Example:
        edge_index = torch.tensor([[0, 1, 2, 3, 3], [1, 2, 0, 0, 4]])
        skip = {"batch_independence": "message passing mixes the nodes of a graph"}
        return Example({"in_channels": 4, "out_channels": 3, "conv": "GCNConv"},
                       (example_tensor(5, 4),), skip=skip,
                       forward_kwargs={"edge_index": edge_index})
