"""Graph data sets made here, without downloads: Zachary's karate club (node classification),
stochastic-block-model graphs (graph classification: how many communities) and N-body
simulations (predict future positions, the EGNN task).

Every generator is seeded: the same arguments give the same graphs in every process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import SpecError
from .batch import Graph

__all__ = [
    "KARATE_LABELS",
    "KarateClub",
    "constant_velocity",
    "karate_club",
    "nbody_graphs",
    "sbm_graphs",
]

#: The four modularity-based communities of PyG's ``KarateClub`` (Kipf & Welling, 2017).
KARATE_LABELS = (
    1, 1, 1, 1, 3, 3, 3, 1, 0, 1, 3, 1, 1, 1, 0, 0, 3, 1, 0, 1, 0, 1,
    0, 0, 2, 2, 0, 0, 2, 0, 0, 2, 0, 0,
)


@dataclass(frozen=True)
class KarateClub:
    """The karate-club graph with its labels and the one-labelled-node-per-class split."""

    graph: Graph
    train_mask: Tensor
    num_classes: int = 4


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{name}={value!r} must be an integer >= {minimum}", path=name)
    return value


def _sorted_edges(src: Tensor, dst: Tensor) -> Tensor:
    """Both directions of the undirected edges ``src–dst``, sorted by (source, target)."""
    row, col = torch.cat([src, dst]), torch.cat([dst, src])
    order = torch.argsort(row * (int(row.max()) + 1 if row.numel() else 1) + col)
    return torch.stack([row[order], col[order]])


def karate_club() -> KarateClub:
    """Zachary's karate club from networkx: 34 nodes, 156 directed edges (78 undirected),
    one-hot node features ``x = I₃₄``, the 4 community labels PyG uses, and
    ``train_mask`` marking the first node of each class (the same graph as PyG's)."""
    import networkx as nx

    edges = torch.tensor(list(nx.karate_club_graph().edges()), dtype=torch.long)
    y = torch.tensor(KARATE_LABELS)
    train_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(4):
        train_mask[(y == c).nonzero()[0]] = True
    graph = Graph(x=torch.eye(len(y)), edge_index=_sorted_edges(edges[:, 0], edges[:, 1]), y=y)
    return KarateClub(graph, train_mask)


def sbm_graphs(
    num_graphs: int,
    *,
    communities: tuple[int, ...] = (1, 2, 3, 4),
    num_nodes: tuple[int, int] = (24, 40),
    p_in: float = 0.5,
    p_out: float = 0.02,
    features: str = "degree",
    seed: int = 0,
) -> list[Graph]:
    """Stochastic-block-model graphs for graph classification: the label ``y`` is the index
    in ``communities`` of the number of (near-equal) blocks the graph has.

    The node count is drawn from ``num_nodes`` (inclusive) independently of the label, so
    only the structure tells the classes apart. Edges inside a block appear with probability
    ``p_in``, across blocks with ``p_out``. ``features``: ``"constant"`` (a column of ones:
    the GNN must count structure) or ``"degree"`` (``[1, log(1 + degree)]``).
    """
    _check_int("num_graphs", num_graphs)
    lo, hi = num_nodes
    _check_int("num_nodes[0]", lo)
    if not communities or any(_check_int("communities", k) > lo for k in communities):
        raise SpecError(f"communities={communities!r} must be 1..{lo} (num_nodes[0])",
                        path="communities")
    if features not in ("constant", "degree"):
        raise SpecError(f"features={features!r} must be 'constant' or 'degree'", path="features")
    for name, p in (("p_in", p_in), ("p_out", p_out)):
        if not 0 <= p <= 1:
            raise SpecError(f"{name}={p!r} must be a probability in [0, 1]", path=name)
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num_graphs):
        label = int(torch.randint(len(communities), (1,), generator=g))
        n = int(torch.randint(lo, hi + 1, (1,), generator=g))
        block = torch.arange(n) * communities[label] // n  # (N,) near-equal blocks
        prob = torch.where(block[:, None] == block[None, :], p_in, p_out)
        upper = (torch.rand(n, n, generator=g) < prob).triu(1)
        src, dst = upper.nonzero().unbind(1)
        edge_index = _sorted_edges(src, dst)
        if features == "constant":
            x = torch.ones(n, 1)
        else:
            deg = torch.bincount(edge_index[1], minlength=n).float()
            x = torch.stack([torch.ones(n), torch.log1p(deg)], dim=1)
        graphs.append(Graph(x=x, edge_index=edge_index, y=torch.tensor(label)))
    return graphs


def _full_edges(n: int) -> Tensor:
    """Every ordered pair ``j ≠ i`` of ``n`` nodes, ``(2, n (n - 1))``."""
    idx = torch.arange(n)
    src, dst = idx.repeat_interleave(n), idx.repeat(n)
    keep = src != dst
    return torch.stack([src[keep], dst[keep]])


def _forces(loc: Tensor, coupling: Tensor, kind: str, max_force: float) -> Tensor:
    """Pairwise forces on each particle ``(S, P, d)``: Coulomb ``q_i q_j r / |r|³`` or
    springs ``-k r``, ``r = x_i - x_j``."""
    diff = loc[:, :, None, :] - loc[:, None, :, :]  # (S, P, P, d)
    if kind == "springs":
        return -(coupling[..., None] * diff).sum(2)
    dist2 = (diff**2).sum(-1)
    dist2 = dist2 + torch.eye(loc.shape[1], dtype=loc.dtype) * 1e30  # no self-force
    force = (coupling / dist2.pow(1.5))[..., None] * diff
    return force.sum(2).clamp(-max_force, max_force)


def nbody_graphs(
    num_samples: int,
    *,
    kind: str = "charged",
    num_particles: int = 5,
    dim: int = 3,
    steps: int = 1000,
    burn_in: int = 3000,
    dt: float = 0.001,
    seed: int = 0,
) -> list[Graph]:
    """N-body systems as fully connected graphs (Kipf et al. 2018; the EGNN benchmark of
    Satorras et al. 2021 uses ``charged``, 5 particles in 3-D, +1000 steps).

    ``charged``: charges ``q = ±1``, Coulomb forces ``q_i q_j r / |r|³`` (clipped to
    ``0.1 / dt``); ``springs``: each pair joined with probability ½ by a spring of stiffness
    0.1. Positions start ``N(0, 1)`` (``0.5`` for springs), speeds at norm 0.5, then
    ``burn_in`` leapfrog steps of ``dt``. Each graph has ``pos`` ``(P, d)`` and
    ``x = [velocity (d), charge]`` ``(P, d + 1)`` at that time, ``edge_attr`` ``(E, 1)`` the
    coupling ``q_i q_j`` (springs: 0 or 1), and ``y`` the positions ``steps`` later ``(P, d)``.
    """
    for name, value in (("num_samples", num_samples), ("num_particles", num_particles),
                        ("dim", dim), ("steps", steps)):
        _check_int(name, value)
    _check_int("burn_in", burn_in, 0)
    if kind not in ("charged", "springs"):
        raise SpecError(f"kind={kind!r} must be 'charged' or 'springs'", path="kind")
    g = torch.Generator().manual_seed(seed)
    s, p = num_samples, num_particles
    shape = (s, p, dim)
    if kind == "charged":
        charge = torch.randint(0, 2, (s, p), generator=g).double() * 2 - 1
        coupling = charge[:, :, None] * charge[:, None, :]  # (S, P, P)
        loc = torch.randn(shape, generator=g, dtype=torch.float64)
    else:
        charge = torch.ones(s, p, dtype=torch.float64)
        upper = (torch.rand(s, p, p, generator=g) < 0.5).double().triu(1)
        coupling = 0.1 * (upper + upper.transpose(1, 2))
        loc = 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)
    vel = torch.randn(shape, generator=g, dtype=torch.float64)
    vel = 0.5 * vel / vel.norm(dim=-1, keepdim=True)

    def run(loc: Tensor, vel: Tensor, n: int) -> tuple[Tensor, Tensor]:
        for _ in range(n):  # leapfrog as in Kipf et al.'s simulator
            loc = loc + dt * vel
            vel = vel + dt * _forces(loc, coupling, kind, 0.1 / dt)
        return loc, vel

    loc, vel = run(loc, vel, burn_in)
    target, _ = run(loc, vel, steps)
    edges = _full_edges(p)
    scale = 1.0 if kind == "charged" else 10.0  # springs: coupling 0.1 -> indicator
    graphs = []
    for i in range(s):
        edge_attr = scale * coupling[i][edges[0], edges[1]][:, None]
        x = torch.cat([vel[i], charge[i][:, None]], dim=1)
        graphs.append(Graph(x=x.float(), edge_index=edges.clone(), edge_attr=edge_attr.float(),
                            pos=loc[i].float(), y=target[i].float()))
    return graphs


def constant_velocity(pos: Tensor, velocity: Tensor, horizon: float) -> Tensor:
    """The constant-velocity baseline of N-body prediction: ``pos + horizon · velocity``
    (``horizon = steps · dt``)."""
    return pos + horizon * velocity
