"""latency() and scaling(): medians/IQR, fitted exponents (attention ~ T^2, conv ~ H*W)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.analysis import fit_exponent, latency, scaling
from netarchitect.analysis.latency import Timing


def test_latency_forward_and_backward():
    model = nn.Linear(8, 8)
    report = latency(model, torch.randn(4, 8), warmup=1, repeats=3, threads=1)
    assert len(report.forward.samples_ms) == 3 and report.forward.median_ms > 0
    assert report.forward_backward is not None and report.forward_backward.iqr_ms >= 0
    assert report.threads == 1 and report.device == "cpu"
    assert all(p.grad is None for p in model.parameters())
    assert json.loads(report.to_json())["forward"]["median_ms"] == report.forward.median_ms
    only_forward = latency(model, torch.randn(4, 8), warmup=0, repeats=1, backward=False)
    assert only_forward.forward_backward is None and only_forward.forward.iqr_ms == 0.0


def test_timing_statistics():
    timing = Timing([1.0, 2.0, 3.0, 4.0, 100.0])
    assert timing.median_ms == 3.0 and timing.iqr_ms == 2.0


def test_latency_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        latency(nn.Linear(2, 2), torch.randn(1, 2), repeats=0)
    with pytest.raises(ValueError, match="threads"):
        latency(nn.Linear(2, 2), torch.randn(1, 2), threads=0)
    with pytest.raises(ValueError, match="meta"):
        latency(nn.Linear(2, 2, device="meta"), torch.randn(1, 2, device="meta"))
    with pytest.raises(ValueError, match="no output requires grad"):
        latency(nn.Linear(2, 2).requires_grad_(False), torch.randn(1, 2), repeats=1)


class Attention(nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


def test_attention_flops_grow_as_t_squared(tmp_path):
    report = scaling(
        lambda t: Attention(),
        [16, 32, 64],
        input_fn=lambda t: torch.randn(1, 2, t, 8),
        metrics=("flops", "memory", "latency", "other_flops"),
        plot_path=tmp_path / "attention.png",
    )
    assert report.exponents["flops"] == pytest.approx(2.0, abs=1e-9)
    assert report.values["flops"] == [2 * 2 * t * t * 16 for t in (16, 32, 64)]
    assert report.exponents["memory"] == 0 or math.isnan(report.exponents["memory"])
    assert report.plot_path is not None and (tmp_path / "attention.png").exists()


def test_convolution_flops_grow_with_pixels():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    report = scaling(
        lambda pixels: conv,
        [64, 256, 1024],
        input_fn=lambda pixels: torch.randn(1, 3, math.isqrt(pixels), math.isqrt(pixels)),
        metrics=("flops", ("params", lambda m, x: sum(p.numel() for p in m.parameters()))),
    )
    assert report.exponents["flops"] == pytest.approx(1.0, abs=1e-9)
    assert report.exponents["params"] == pytest.approx(0.0, abs=1e-9)
    assert json.loads(report.to_json())["sizes"] == [64.0, 256.0, 1024.0]


def test_memory_metric_grows_with_size():
    layer = nn.Linear(4, 4)

    def activation_bytes(model, inputs):
        return 4.0 * inputs.numel()

    report = scaling(
        lambda n: layer,
        [2, 4, 8],
        input_fn=lambda n: torch.randn(n, 4),
        metrics=("memory", activation_bytes),
    )
    assert report.exponents["memory"] == pytest.approx(1.0)
    assert report.exponents["activation_bytes"] == pytest.approx(1.0)


def test_scaling_bad_arguments_and_fit():
    with pytest.raises(ValueError, match="at least two sizes"):
        scaling(lambda s: nn.Identity(), [1], input_fn=torch.randn)
    with pytest.raises(ValueError, match="positive"):
        scaling(lambda s: nn.Identity(), [0, 1], input_fn=torch.randn)
    with pytest.raises(ValueError, match="unknown metric"):
        scaling(lambda s: nn.Identity(), [1, 2], input_fn=torch.randn, metrics=("speed",))
    assert math.isnan(fit_exponent([1, 2], [0.0, 1.0]))
    assert fit_exponent([1, 10, 100], [3, 300, 30000]) == pytest.approx(2.0)
