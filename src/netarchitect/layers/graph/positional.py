"""Structural positional encodings of graph nodes: Laplacian eigenvectors (Dwivedi et al.
2020, "Benchmarking GNNs") and random-walk return probabilities (Dwivedi et al. 2022, RWSE).

Both depend on the graph only, are computed per graph of a batch (``batch`` vector) on dense
per-graph matrices (``O(n²)`` memory per graph: meant for the small graphs of graph-level
tasks, as PyG's transforms) without gradient, and are cached while the same ``edge_index``
(and ``batch``) tensor is passed unmodified. The blocks concatenate the encoding to ``x``, add
a linear projection of it to ``x``, or return it alone (``mode``).

Grouping the nodes by graph size depends on the values of ``batch``, so the computation cannot
be traced; under ``torch.compile`` and ``torch.export`` the blocks call it as one opaque
custom op, ``netarchitect::graph_positional_encoding`` (output ``(N, k)`` float64, known from
the shapes alone), which runs the same eager code: compiled and exported models give the
eager results, without a graph break.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ...registry import Example, register_block
from .._factory import check_choice, check_positive_int, example_tensor
from ..basic import Linear
from .checks import GraphInputError, check_batch, check_edge_index
from .conv import example_graph
from .message_passing import resolve_edge_index
from .scatter import TensorCache

__all__ = ["LaplacianPE", "RandomWalkPE", "laplacian_pe", "random_walk_pe"]

Device = torch.device | str | None
Dtype = torch.dtype | None
MODES = ("concat", "project", "pe")


def _graphs(
    edge_index: Tensor, num_nodes: int, batch: Tensor | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Per group of equal-sized graphs: node ids ``(G, s)`` and edge counts ``A`` ``(G, s, s)``
    (``A[g, i, j]`` = number of edges ``i -> j``, float64)."""
    device = edge_index.device
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
    batch = batch.long()
    sizes = torch.bincount(batch) if num_nodes else batch.new_zeros(0)
    ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    src, dst = edge_index[0], edge_index[1]
    graph_of_edge = batch[src]
    for s in sorted({int(v) for v in sizes.tolist()} - {0}):
        graphs = (sizes == s).nonzero().squeeze(1)  # (G,)
        slot = torch.full_like(sizes, -1)
        slot[graphs] = torch.arange(len(graphs), device=device)
        nodes = ptr[graphs].unsqueeze(1) + torch.arange(s, device=device)  # (G, s)
        e = slot[graph_of_edge] >= 0
        g = slot[graph_of_edge[e]]
        first = ptr[graph_of_edge[e]]
        adj = torch.zeros(len(graphs), s, s, dtype=torch.float64, device=device)
        adj.index_put_(
            (g, src[e] - first, dst[e] - first),
            adj.new_ones(()).expand(int(e.sum())),
            accumulate=True,
        )
        yield nodes, adj


def _per_graph(
    edge_index: Tensor,
    num_nodes: int,
    k: int,
    batch: Tensor | None,
    fn: Callable[[Tensor, int], Tensor],
) -> Tensor:
    out = torch.zeros(num_nodes, k, dtype=torch.float64, device=edge_index.device)
    for nodes, adj in _graphs(edge_index, num_nodes, batch):
        out[nodes.reshape(-1)] = fn(adj, k).reshape(-1, k)
    return out


def _laplacian_eigvecs(adj: Tensor, k: int) -> Tensor:
    """``k`` eigenvectors after the first of ``I - D^-1/2 A D^-1/2`` per graph, zero-padded."""
    a = ((adj + adj.transpose(1, 2)) > 0).to(adj.dtype)  # undirected, simple
    a = a * (1 - torch.eye(a.shape[-1], dtype=a.dtype, device=a.device))
    deg = a.sum(-1)
    dinv = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), 0.0)
    lap = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device) - dinv.unsqueeze(
        -1
    ) * a * dinv.unsqueeze(-2)
    _, vecs = torch.linalg.eigh(lap)  # ascending eigenvalues
    vecs = vecs[..., 1 : k + 1]
    pad = k - vecs.shape[-1]
    return torch.nn.functional.pad(vecs, (0, pad)) if pad > 0 else vecs


def _random_walk_diag(adj: Tensor, k: int) -> Tensor:
    """``[diag(P), diag(P²), ..., diag(P^k)]`` per graph, ``P = D_out^-1 A``."""
    p = adj / adj.sum(-1, keepdim=True).clamp(min=1)
    out, power = [], p
    for step in range(k):
        if step:
            power = power @ p
        out.append(torch.diagonal(power, dim1=-2, dim2=-1))
    return torch.stack(out, dim=-1)


def _validate(edge_index: Tensor, num_nodes: int, k: int, batch: Tensor | None) -> None:
    check_positive_int("k", k)
    check_edge_index(edge_index, num_nodes)
    if batch is None:
        return
    check_batch(batch, num_nodes)
    crossing = (batch[edge_index[0]] != batch[edge_index[1]]).nonzero()
    if crossing.numel():
        e = int(crossing[0, 0])
        j, i = (int(v) for v in edge_index[:, e])
        raise GraphInputError(
            f"edge_index[:, {e}]: edge {j} -> {i} joins graph {int(batch[j])} to graph "
            f"{int(batch[i])} of batch (edges must stay inside a graph)"
        )


@torch.no_grad()
def laplacian_pe(
    edge_index: Tensor, num_nodes: int, k: int, *, batch: Tensor | None = None
) -> Tensor:
    """Laplacian eigenvector encoding ``(N, k)`` (float64): per graph, the eigenvectors of the
    ``k`` smallest eigenvalues after the first of the symmetric normalised Laplacian of the
    undirected simple graph (direction, multi-edges and loops ignored), zero columns where a
    graph has ``<= k`` nodes. Each vector's sign is arbitrary (see :class:`LaplacianPE`)."""
    _validate(edge_index, num_nodes, k, batch)
    return _per_graph(edge_index, num_nodes, k, batch, _laplacian_eigvecs)


@torch.no_grad()
def random_walk_pe(
    edge_index: Tensor, num_nodes: int, k: int, *, batch: Tensor | None = None
) -> Tensor:
    """Random-walk encoding ``(N, k)`` (float64): ``[P_ii, (P²)_ii, ..., (P^k)_ii]``, the
    probability of a ``t``-step walk along the edges (``P = D_out^-1 A``, multi-edges counted)
    returning to ``i``; 0 for nodes without out-edges."""
    _validate(edge_index, num_nodes, k, batch)
    return _per_graph(edge_index, num_nodes, k, batch, _random_walk_diag)


_ENCODERS: dict[str, Callable[..., Tensor]] = {
    "laplacian": laplacian_pe,
    "random_walk": random_walk_pe,
}
_CACHE = TensorCache()


def _cached_encoding(
    kind: str, edge_index: Tensor, batch: Tensor | None, num_nodes: int, k: int
) -> Tensor:
    """``_ENCODERS[kind](edge_index, num_nodes, k, batch=batch)``, reused while the same
    unmodified ``edge_index`` and ``batch`` tensors are passed."""
    return _CACHE.get(
        (edge_index, batch),
        (kind, num_nodes, k),
        lambda: _ENCODERS[kind](edge_index, num_nodes, k, batch=batch),
    )


@torch.library.custom_op("netarchitect::graph_positional_encoding", mutates_args=())
def _encoding_op(
    edge_index: Tensor, batch: Tensor | None, num_nodes: int, k: int, kind: str
) -> Tensor:
    """The encoding as an op ``torch.compile``/``torch.export`` call without tracing it."""
    return _cached_encoding(kind, edge_index, batch, num_nodes, k).clone()


@_encoding_op.register_fake
def _encoding_shape(
    edge_index: Tensor, batch: Tensor | None, num_nodes: int, k: int, kind: str
) -> Tensor:
    return edge_index.new_empty(num_nodes, k, dtype=torch.float64)


def _examples() -> list[Example]:
    """The blocks' modes (each block lists them: the sweep does not inherit examples)."""
    ei = example_graph()
    batch = torch.tensor([0, 0, 0, 0, 0, 1])  # node 5 is isolated: a graph of its own
    x = (example_tensor(6, 4),)
    skip = {"batch_independence": "the encoding depends on the whole graph"}
    return [
        Example({"in_channels": 4, "dim": 3}, x, skip, {"edge_index": ei}, "concat"),
        Example({"in_channels": 4, "dim": 2, "mode": "project"}, x, skip,
                {"edge_index": ei, "batch": batch}, "project"),
        Example({"in_channels": 4, "dim": 2, "mode": "pe"}, x, skip, {}, "no_edges"),
    ]  # fmt: skip


class _PositionalEncoding(nn.Module):
    """Shared block: ``mode`` ``"concat"`` -> ``[x, pe]``; ``"project"`` -> ``x + W pe + b``;
    ``"pe"`` -> ``pe``."""

    encode: Callable[..., Tensor]
    kind: str

    def __init__(
        self, in_channels: int, dim: int = 8, *, mode: str = "concat",
        device: Device = None, dtype: Dtype = None,
    ) -> None:  # fmt: skip
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("dim", dim)
        check_choice("mode", mode, MODES)
        self.in_channels, self.dim, self.mode = in_channels, dim, mode
        self.proj = (
            Linear(dim, in_channels, device=device, dtype=dtype) if mode == "project" else None
        )

    def reset_parameters(self) -> None:
        if self.proj is not None:
            self.proj.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, dim={self.dim}, mode={self.mode!r}"

    @classmethod
    def examples(cls) -> list[Example]:
        return _examples()

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def _encoding(self, x: Tensor, edge_index: Tensor, batch: Tensor | None) -> Tensor:
        n = x.shape[0]
        if x.device.type == "meta" or edge_index.device.type == "meta":
            return x.new_zeros(n, self.dim)
        if torch.compiler.is_compiling():  # torch.compile / torch.export: one opaque op
            pe = _encoding_op(edge_index, batch, n, self.dim, self.kind)
        else:
            pe = _cached_encoding(self.kind, edge_index, batch, n, self.dim)
        return pe.to(device=x.device, dtype=x.dtype, copy=True)  # never hand out the cache

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, batch: Tensor | None = None
    ) -> Tensor:
        if edge_index is None:
            edge_index = resolve_edge_index(None, x)
        pe = self._augment(self._encoding(x, edge_index, batch))
        if self.mode == "pe":
            return pe
        if self.proj is not None:
            return x + self.proj(pe)
        return torch.cat([x, pe], dim=-1)

    def _augment(self, pe: Tensor) -> Tensor:
        return pe


@register_block("laplacian_pe", kind="graph_pe")
class LaplacianPE(_PositionalEncoding):
    """Laplacian eigenvector positional encoding (:func:`laplacian_pe`, ``dim`` vectors).

    Eigenvectors have no canonical sign: with ``sign_flip`` (default) each vector's sign is
    flipped at random in training (Dwivedi et al.), so the model learns sign invariance.
    ``mode`` as :class:`RandomWalkPE`.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)``, ``batch`` ``(N,)`` ->
        ``(N, in_channels + dim)`` (concat), ``(N, in_channels)`` (project), ``(N, dim)`` (pe).
    """

    encode = staticmethod(laplacian_pe)
    kind = "laplacian"

    @classmethod
    def examples(cls) -> list[Example]:  # listed here: the sweep does not inherit examples
        return _examples()

    def __init__(
        self, in_channels: int, dim: int = 8, *, mode: str = "concat", sign_flip: bool = True,
        device: Device = None, dtype: Dtype = None,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, dim, mode=mode, device=device, dtype=dtype)
        self.sign_flip = sign_flip

    def _augment(self, pe: Tensor) -> Tensor:
        if not (self.training and self.sign_flip):
            return pe
        sign = torch.randint(0, 2, (self.dim,), device=pe.device).to(pe.dtype) * 2 - 1
        return pe * sign


@register_block("random_walk_pe", kind="graph_pe")
class RandomWalkPE(_PositionalEncoding):
    """Random-walk structural encoding (:func:`random_walk_pe`, walks of 1..``dim`` steps).

    ``mode``: ``"concat"`` -> ``[x, pe]``; ``"project"`` -> ``x + W pe + b``; ``"pe"`` -> ``pe``.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)``, ``batch`` ``(N,)`` ->
        ``(N, in_channels + dim)`` (concat), ``(N, in_channels)`` (project), ``(N, dim)`` (pe).
    """

    encode = staticmethod(random_walk_pe)
    kind = "random_walk"

    @classmethod
    def examples(cls) -> list[Example]:  # listed here: the sweep does not inherit examples
        return _examples()
