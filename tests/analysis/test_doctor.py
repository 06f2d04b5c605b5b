"""diagnose(): flags broken networks, locates NaNs, passes a healthy pre-norm network."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from netarchitect.analysis import THRESHOLDS, default_loss, diagnose, plot_gradient_flow


def sigmoid_mlp(depth: int = 50, width: int = 16) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(width, 4))


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


class Block(nn.Module):
    """Pre-norm residual MLP block."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class PreNormNet(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Linear(16, dim)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x))))


def test_plain_sigmoid_mlp_of_50_layers_vanishes():
    model = sigmoid_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    report = diagnose(model, torch.randn(8, 16))
    names = [f.name for f in report.flags]
    assert "vanishing" in names and not report.healthy
    assert report.layers[0].name == "0.weight" and report.layers[-1].name == "100.weight"
    assert report.layers[0].grad_norm < THRESHOLDS["vanishing_ratio"] * report.layers[-1].grad_norm
    assert "use pre-norm (normalise the input of each residual branch)" in report.suggestions
    assert "replace sigmoid/tanh with relu/gelu" in report.suggestions
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # untouched
    assert all(p.grad is None for p in model.parameters())
    assert "vanishing" in report.render() and "Thresholds:" in report.render()


def test_log_of_negative_inputs_is_located():
    model = nn.Sequential(nn.Linear(8, 8), Log(), nn.Linear(8, 2))
    report = diagnose(model, torch.randn(4, 8))
    assert report.nonfinite is not None
    assert (report.nonfinite.path, report.nonfinite.op) == ("1", "aten.log")
    assert report.nonfinite.phase == "forward" and report.nonfinite.inputs_finite
    assert [f.name for f in report.flags] == ["nonfinite"]
    assert report.suggestions[0].startswith("check inputs to log at 1")


def test_functional_log_is_located_at_the_calling_module():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(8, 8)

        def forward(self, x):
            return torch.log(self.inner(x)).sum(-1)

    report = diagnose(Net(), torch.randn(4, 8))
    assert (report.nonfinite.path, report.nonfinite.op) == ("", "aten.log")
    assert "in module '<root>'" in report.flags[0].message


def test_nan_in_the_loss_is_outside_the_model():
    report = diagnose(nn.Linear(3, 3), torch.randn(2, 3), loss_fn=lambda out: out.log().sum())
    assert report.nonfinite.path is None and report.nonfinite.op == "aten.log"
    assert "<outside the model, e.g. the loss>" in report.suggestions[0]


def test_healthy_prenorm_residual_network_passes():
    report = diagnose(PreNormNet(), torch.randn(16, 16), steps=3)
    assert report.healthy, report.verdict
    assert report.verdict == "healthy: no problems found" and report.suggestions == []
    assert len(report.losses) == 3 and report.losses[-1] < report.losses[0]
    assert set(report.dead_relu) == {f"blocks.{i}.act" for i in range(6)}
    assert all(0.2 < v < 0.8 for v in report.dead_relu.values())
    assert report.activations[0].path == "stem" and report.activations[-1].path == "head"


def test_healthy_transformer_passes():
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
    model = nn.Sequential(
        nn.Linear(8, 32),
        nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
        nn.Linear(32, 4),
    )
    report = diagnose(model, torch.randn(2, 5, 8))
    assert report.healthy, report.verdict


def test_exploding_and_large_updates():
    model = nn.Sequential(*[nn.Linear(16, 16, bias=False) for _ in range(12)])
    with torch.no_grad():
        for layer in model:
            layer.weight.mul_(8.0)
    report = diagnose(model, torch.randn(8, 16), lr=1.0)
    names = {f.name for f in report.flags}
    assert {"exploding", "large_updates", "activation_growth"} <= names
    assert "lower lr" in report.suggestions


def test_dead_relu_saturation_and_collapse():
    dead = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)
    report = diagnose(dead, torch.randn(16, 8))
    assert "dead_relu" in {f.name for f in report.flags}
    assert report.dead_relu["1"] == 1.0
    hot = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid())
    with torch.no_grad():
        hot[0].weight.mul_(100.0)
        hot[2].weight.mul_(100.0)
    report = diagnose(hot, torch.randn(16, 8))
    assert "saturation" in {f.name for f in report.flags}
    assert report.saturation["1"] > 0.5
    tiny = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with torch.no_grad():
        tiny[1].weight.mul_(1e-4)
        tiny[1].bias.zero_()
    assert "activation_collapse" in {f.name for f in diagnose(tiny, torch.randn(4, 8)).flags}


def test_diverging_training_and_nan_in_a_later_step():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    report = diagnose(model, torch.randn(8, 4), steps=4, lr=10.0)
    names = {f.name for f in report.flags}
    assert names & {"diverging", "nonfinite"}
    assert "lower lr" in report.suggestions


def test_nan_in_inputs_and_in_gradients():
    x = torch.randn(2, 4)
    x[0, 0] = float("nan")
    report = diagnose(nn.Linear(4, 2), x)
    assert not report.nonfinite.inputs_finite
    assert "already contain NaN" in report.suggestions[0]

    class SqrtGrad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return torch.sqrt(self.fc(x) * 0.0)  # finite forward, infinite gradient

    report = diagnose(SqrtGrad(), torch.randn(3, 2), loss_fn=lambda out: out.sum())
    assert report.nonfinite.phase == "backward"
    assert [f.name for f in report.flags][:2] == ["nonfinite", "exploding"]
    assert "lower lr" in report.suggestions


def test_overflow_hint_and_integer_outputs():
    class Overflow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.index = Argmax()

        def forward(self, x):
            h = self.fc(x)
            return torch.exp(h * 1e4) + self.index(h)

    class Argmax(nn.Module):
        def forward(self, x):
            return x.argmax(-1, keepdim=True)

    report = diagnose(Overflow(), torch.randn(4, 2))
    assert report.nonfinite.op == "aten.exp"
    assert report.suggestions[0] == "check inputs to exp at <root>"
    assert "index" not in [a.path for a in report.activations]  # integer output: no stats


def test_gradient_flag_rules():
    from netarchitect.analysis.doctor import LayerGrad, _gradient_flags

    steep = [LayerGrad("a", "a.weight", 10.0, 1.0), LayerGrad("b", "b.weight", 1e-3, 1.0)]
    assert [f.name for f in _gradient_flags(steep, 1e-3, True)] == ["exploding"]
    flat = [LayerGrad("a", "a.weight", 1.0, 1.0), LayerGrad("b", "b.weight", 1.0, 1.0)]
    assert [f.name for f in _gradient_flags(flat, 1e-3, False)] == ["exploding"]
    assert _gradient_flags(flat, 1e-3, True) == []
    assert LayerGrad("c", "c.weight", 1.0, 0.0).ratio == float("inf")


def test_custom_loss_bad_arguments_and_default_loss():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        diagnose(nn.Linear(2, 2), torch.randn(1, 2), steps=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        diagnose(nn.Linear(2, 2), torch.randn(1, 2), lr=0)
    with pytest.raises(ValueError, match="meta device"):
        diagnose(nn.Linear(2, 2, device="meta"), torch.randn(1, 2, device="meta"))
    with pytest.raises(ValueError, match="no floating-point tensor"):
        default_loss(torch.zeros(2, dtype=torch.long))
    out = torch.zeros(3, 2)
    assert default_loss(out).item() == pytest.approx(default_loss(out).item())


def test_report_json_and_gradient_flow_plot(tmp_path):
    report = diagnose(sigmoid_mlp(depth=4), torch.randn(4, 16))
    data = json.loads(report.to_json())
    assert data["thresholds"] == THRESHOLDS and data["layers"][0]["name"] == "0.weight"
    path = plot_gradient_flow(report, tmp_path / "plots" / "flow.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["flow.png"]  # no temporary left
