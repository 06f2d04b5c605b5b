"""benchmarks/bench_diffusion2d.py: the diffusers peer loop computes what ours does, and the
ring metrics report what they should."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks import bench_diffusion2d as bench
from netarchitect.generative import NoiseSchedule, ddim_sample, gaussian_ring
from netarchitect.models.diffusion_mlp import diffusion_mlp


def test_peer_loop_matches_ours() -> None:
    model = diffusion_mlp(hidden_dim=8, num_blocks=1, seed=0)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    ours = ddim_sample(model, NoiseSchedule.linear(1000), x_T=x_T, steps=10)
    torch.testing.assert_close(ours, bench.diffusers_loop(model, x_T, steps=10)(),
                               rtol=1e-5, atol=1e-5)


def test_ring_quality_of_data_itself() -> None:
    a, _ = gaussian_ring(500, std=bench.STD, seed=0)
    b, _ = gaussian_ring(500, std=bench.STD, seed=1)
    q = bench.ring_quality(a, b)
    assert q["mode_recall"] == 1.0 and q["mode_precision"] > 0.95
    assert q["knn_precision"] > 0.9 and abs(q["mmd"]) < 1e-3
