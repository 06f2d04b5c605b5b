"""benchmarks/bench_graph.py: the PyG peers compute what ours do (outputs and gradients with
shared weights), the rotations are orthogonal, and ``--quick`` writes every case."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("torch_geometric")

from benchmarks import bench_graph as bench


@pytest.mark.parametrize("kind", bench.KINDS)
def test_peer_has_our_weights_outputs_and_gradients(kind):
    x, edge_index = bench.random_graph(50, 300, 16, seed=1)
    ours, peer = bench.build_pair(kind, 16)
    assert bench.check_parity(ours, peer, x, edge_index) < 1e-5
    bench.train_step(ours, x, edge_index)()
    bench.train_step(peer, x, edge_index)()
    theirs = dict(peer.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad.reshape(theirs[name].shape), theirs[name].grad, atol=1e-5, rtol=1e-5
        )


def test_parity_check_refuses_different_models():
    x, edge_index = bench.random_graph(20, 60, 16)
    ours, peer = bench.build_pair("gcn", 16)
    with torch.no_grad():
        peer.conv1.bias.add_(1.0)
    with pytest.raises(AssertionError, match="outputs differ"):
        bench.check_parity(ours, peer, x, edge_index)


@pytest.mark.parametrize("reflect", [False, True])
def test_random_orthogonal_matrices(reflect):
    q = bench._rotation(3, torch.Generator().manual_seed(0), reflect)
    torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=q.dtype))
    assert (torch.det(q) < 0) == reflect


@pytest.mark.slow
def test_quick_run_writes_every_case(tmp_path):
    bench.main(["--quick", "--threads", "1", "--results-dir", str(tmp_path)])
    cases = json.loads((tmp_path / "graph.json").read_text())["cases"]
    assert set(cases) == {f"{k}_2layer_fwd_bwd" for k in bench.KINDS} | {"egnn_layer_fwd"}
    assert cases["gcn_2layer_fwd_bwd"]["target"] == 0.25
    memory = cases["gat_2layer_fwd_bwd"]["extra"]["memory"]
    assert memory["ours_bytes"] > 0 and memory["pyg_bytes"] > 0 and memory["target"] == 1.0
    egnn = cases["egnn_layer_fwd"]["extra"]
    assert egnn["equivariance_error"]["max"] < 1e-5 and egnn["stacked_8_coincident_finite"]
