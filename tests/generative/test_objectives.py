"""ε / x₀ / v conversions and the diffusion loss (targets, class dropout, bad input)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from netarchitect.generative import (
    GenerativeError,
    NoiseSchedule,
    diffusion_loss,
    eps_to_x0,
    null_class_of,
    prediction_target,
    q_sample,
    to_x0_eps,
    train_denoiser,
    v_target,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)

S = NoiseSchedule.cosine(1000)


def _draw(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 4, generator=g, dtype=dtype)
    eps = torch.randn(6, 3, 4, generator=g, dtype=dtype)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    return x0, eps, t, q_sample(S, x0, t, eps)


def test_conversions_invert_each_other() -> None:
    x0, eps, t, xt = _draw()
    v = v_target(S, x0, t, eps)
    exact = {"rtol": 1e-9, "atol": 1e-9}
    torch.testing.assert_close(eps_to_x0(S, xt, t, eps), x0, **exact)
    torch.testing.assert_close(x0_to_eps(S, xt, t, x0), eps, **exact)
    torch.testing.assert_close(v_to_x0(S, xt, t, v), x0, **exact)
    torch.testing.assert_close(v_to_eps(S, xt, t, v), eps, **exact)
    # round trips through each parameterisation
    torch.testing.assert_close(x0_to_eps(S, xt, t, eps_to_x0(S, xt, t, eps)), eps, **exact)
    torch.testing.assert_close(v_target(S, v_to_x0(S, xt, t, v), t, v_to_eps(S, xt, t, v)), v, **exact)
    for pred, out in (("eps", eps), ("x0", x0), ("v", v)):
        a, b = to_x0_eps(S, xt, t, out, pred)
        torch.testing.assert_close(a, x0, **exact)
        torch.testing.assert_close(b, eps, **exact)
        torch.testing.assert_close(prediction_target(S, x0, t, eps, pred), out, **exact)


def test_conversions_in_float32_and_scalar_t() -> None:
    x0, eps, _, _ = _draw(torch.float32)
    xt = q_sample(S, x0, torch.full((6,), 300), eps)
    out = eps_to_x0(S, xt, 300, eps)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)


def test_v_has_unit_variance_and_is_a_rotation() -> None:
    """v = √ᾱ ε - √(1-ᾱ) x₀: (x_t, v) is (x₀, ε) rotated by φ with cos φ = √ᾱ."""
    x0, eps, t, xt = _draw()
    v = v_target(S, x0, t, eps)
    torch.testing.assert_close(xt.pow(2) + v.pow(2), x0.pow(2) + eps.pow(2))


@pytest.mark.parametrize("bad", ["epsilon", "sample"])
def test_unknown_prediction(bad: str) -> None:
    x0, eps, t, xt = _draw()
    with pytest.raises(GenerativeError, match="prediction: .* is not one of"):
        to_x0_eps(S, xt, t, eps, bad)
    with pytest.raises(GenerativeError, match="prediction"):
        prediction_target(S, x0, t, eps, bad)


class Recorder(nn.Module):
    """Returns zeros and remembers what it was called with."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        self.calls.append((x, t, y))
        return x * self.w


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_diffusion_loss_is_mse_to_the_target(prediction: str) -> None:
    model = Recorder()
    x0 = torch.randn(64, 2)
    g = torch.Generator().manual_seed(3)
    loss = diffusion_loss(model, x0, S, prediction=prediction, generator=g)
    (xt, t, y) = model.calls[0]
    assert y is None and t.dtype == torch.int64 and t.shape == (64,)
    assert 0 <= int(t.min()) and int(t.max()) < 1000
    g = torch.Generator().manual_seed(3)  # replay the draws: t, then ε
    t2 = torch.randint(0, 1000, (64,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    assert torch.equal(t, t2)
    torch.testing.assert_close(xt, q_sample(S, x0, t, eps))
    target = prediction_target(S, x0, t, eps, prediction)
    torch.testing.assert_close(loss, target.pow(2).mean())  # the model outputs zeros


def test_class_dropout_to_the_null_class() -> None:
    model = Recorder()
    y = torch.zeros(4000, dtype=torch.long)
    diffusion_loss(model, torch.randn(4000, 2), S, y=y, p_uncond=0.25,
                   generator=torch.Generator().manual_seed(0))
    seen = model.calls[-1][2]
    assert set(seen.unique().tolist()) == {0, 3}  # the null class is num_classes
    assert float((seen == 3).double().mean()) == pytest.approx(0.25, abs=0.03)
    diffusion_loss(model, torch.randn(8, 2), S, y=y[:8])
    assert torch.equal(model.calls[-1][2], y[:8])  # no dropout by default
    diffusion_loss(model, torch.randn(8, 2), S, y=y[:8], p_uncond=1.0, null_class=7)
    assert (model.calls[-1][2] == 7).all()


def test_null_class_of() -> None:
    assert null_class_of(Recorder()) == 3
    assert null_class_of(nn.Linear(1, 1), 5) == 5
    with pytest.raises(GenerativeError, match="null_class"):
        null_class_of(nn.Linear(1, 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p_uncond": 1.5, "y": torch.zeros(2, dtype=torch.long)}, "p_uncond: 1.5"),
        ({"p_uncond": 0.1}, "p_uncond: class dropout needs labels"),
        ({"prediction": "score"}, "prediction"),
    ],
)
def test_diffusion_loss_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(GenerativeError, match=match):
        diffusion_loss(Recorder(), torch.randn(2, 2), S, **kwargs)


def test_train_denoiser_reduces_the_loss_and_is_seeded() -> None:
    torch.manual_seed(0)
    data = torch.randn(256, 2) * 0.1 + 1.0

    def run() -> tuple[list[float], nn.Module]:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 2))
        model = _Wrap(net)
        return train_denoiser(model, data, S, steps=150, batch_size=64, lr=1e-2,
                              prediction="x0"), model

    losses, model = run()
    assert not model.training
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:5]) / 5
    assert run()[0] == losses
    with pytest.raises(GenerativeError, match="steps: 0"):
        train_denoiser(model, data, S, steps=0)


def test_train_denoiser_with_labels() -> None:
    model = Recorder()
    train_denoiser(model, torch.randn(16, 2), S, steps=2, batch_size=4,
                   labels=torch.arange(16) % 3, p_uncond=0.5)
    assert model.calls[-1][2].shape == (4,)


class _Wrap(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x)
