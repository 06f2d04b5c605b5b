"""Built-in graph data: karate club (as PyG's), SBM graph classification, N-body simulation."""

from __future__ import annotations

import pytest
import torch

from netarchitect.errors import SpecError
from netarchitect.graph import constant_velocity, karate_club, nbody_graphs, sbm_graphs


def test_karate_club_equals_pygs():
    datasets = pytest.importorskip("torch_geometric.datasets")
    ours, ref = karate_club(), datasets.KarateClub()[0]
    g = ours.graph
    assert (g.num_nodes, g.num_edges, ours.num_classes) == (34, 156, 4)
    torch.testing.assert_close(g.edge_index, ref.edge_index)
    torch.testing.assert_close(g.y, ref.y)
    torch.testing.assert_close(g.x, ref.x)
    torch.testing.assert_close(ours.train_mask, ref.train_mask)
    assert int(ours.train_mask.sum()) == 4


def test_sbm_labels_count_communities_and_are_seeded():
    graphs = sbm_graphs(40, seed=3)
    again = sbm_graphs(40, seed=3)
    for a, b in zip(graphs, again, strict=True):
        torch.testing.assert_close(a.edge_index, b.edge_index)
        assert int(a.y) == int(b.y)
    labels = torch.stack([g.y for g in graphs])
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert all(24 <= g.num_nodes <= 40 and g.x.shape == (g.num_nodes, 2) for g in graphs)
    # undirected: every edge in both directions, no self-loops
    for g in graphs[:5]:
        ei = g.edge_index
        assert set(map(tuple, ei.t().tolist())) == set(map(tuple, ei.flip(0).t().tolist()))
        assert bool((ei[0] != ei[1]).all())
    # more communities -> sparser graphs (what makes the task learnable)
    density = {k: [] for k in range(4)}
    for g in graphs:
        density[int(g.y)].append(g.num_edges / g.num_nodes**2)
    means = [sum(v) / len(v) for v in density.values()]
    assert means == sorted(means, reverse=True)
    const = sbm_graphs(2, features="constant", seed=0)
    assert bool((const[0].x == 1).all()) and const[0].x.shape[1] == 1


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [({"features": "pagerank"}, "features"), ({"p_in": 1.5}, "p_in"),
     ({"communities": (50,)}, "communities"), ({"num_nodes": (0, 3)}, "num_nodes[0]")],
)
def test_sbm_bad_arguments(kwargs, path):
    with pytest.raises(SpecError) as err:
        sbm_graphs(2, **kwargs)
    assert err.value.path == path


@pytest.mark.parametrize("kind", ["charged", "springs"])
def test_nbody_is_seeded_and_the_baseline_is_imperfect(kind):
    graphs = nbody_graphs(8, kind=kind, steps=200, burn_in=100, seed=1)
    again = nbody_graphs(8, kind=kind, steps=200, burn_in=100, seed=1)
    torch.testing.assert_close(graphs[3].y, again[3].y)
    g = graphs[0]
    assert g.pos.shape == (5, 3) and g.x.shape == (5, 4) and g.edge_index.shape == (2, 20)
    assert g.edge_attr.shape == (20, 1) and set(g.edge_attr.flatten().tolist()) <= {-1.0, 0.0, 1.0}
    speeds = g.x[:, :3].norm(dim=1)
    assert bool((speeds > 0).all())
    base = [constant_velocity(h.pos, h.x[:, :3], 200 * 0.001) for h in graphs]
    mse = torch.stack([((b - h.y) ** 2).mean() for b, h in zip(base, graphs, strict=True)])
    drift = torch.stack([((h.pos - h.y) ** 2).mean() for h in graphs])
    assert 0 < float(mse.mean()) < float(drift.mean())  # forces matter, velocity helps


def test_nbody_bad_arguments():
    with pytest.raises(SpecError, match="kind"):
        nbody_graphs(2, kind="gravity")
    with pytest.raises(SpecError, match="num_particles"):
        nbody_graphs(2, num_particles=0)
