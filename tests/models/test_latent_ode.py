import math

import pytest
import torch

from netarchitect.errors import ShapeError, SpecError
from netarchitect.models.latent_ode import LatentODE, gaussian_kl

pytest.importorskip("torchdiffeq")

FAST = {"solver": "rk4", "step_size": 0.25}


def _model(**kw) -> LatentODE:
    torch.manual_seed(0)
    args = {"latent_dim": 3, "hidden_size": 6, "func_hidden_dim": 8, **FAST, **kw}
    return LatentODE(2, **args)


def _series(b: int = 3, t: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, t, 2, generator=g), torch.sort(torch.rand(t, generator=g) * 3).values


def test_gaussian_kl_reference():
    mean, logvar = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 * (4 + 1 - 1 - log 4) for the second dimension, 0 for the standard normal one
    torch.testing.assert_close(gaussian_kl(mean, logvar), torch.tensor([0.5 * (4 - math.log(4))]))


def test_shapes_encode_decode_extrapolate():
    model, (x, t) = _model().eval(), _series()
    mean, logvar = model.encode(x, t)
    assert mean.shape == logvar.shape == (3, 3)
    assert model(x, t).shape == (3, 5, 2)
    future = t[-1] + torch.tensor([0.5, 1.0, 2.0, 2.5])
    out = model.extrapolate(x, t, future)
    assert out.shape == (3, 4, 2) and torch.isfinite(out).all()
    # decoding from t0 through the future equals decoding the future alone (same ODE solution)
    full = model(x, t, torch.cat([t, future]))
    torch.testing.assert_close(full[:, 5:], out, atol=1e-5, rtol=1e-5)
    # same ODE, but the fixed-step grid ends elsewhere: equal up to the interpolation error
    torch.testing.assert_close(full[:, :5], model(x, t), atol=2e-3, rtol=0)
    assert model.dynamics.nfe_forward > 0


def test_eval_is_deterministic_train_samples():
    model, (x, t) = _model(), _series()
    model.eval()
    torch.testing.assert_close(model(x, t), model(x, t))
    model.train()
    assert not torch.equal(model(x, t), model(x, t))


def test_elbo_terms_and_gradients_reach_every_parameter():
    model, (x, t) = _model(), _series()
    mask = torch.ones_like(x)
    mask[0, 1:3] = 0
    terms = model.elbo(x, t, mask)
    assert terms.log_likelihood.shape == terms.kl.shape == (3,)
    assert (terms.kl >= 0).all()
    loss = model.loss(x, t, mask, kl_weight=0.5)
    assert loss.ndim == 0
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_masked_values_do_not_change_the_posterior():
    model, (x, t) = _model().eval(), _series()
    mask = torch.ones_like(x)
    mask[:, 2] = 0
    other = x.clone()
    other[:, 2] = 100.0  # unobserved: must be ignored
    torch.testing.assert_close(model.encode(x, t, mask), model.encode(other, t, mask))
    torch.manual_seed(1)
    a = model.elbo(x, t, mask)
    torch.manual_seed(1)
    b = model.elbo(other, t, mask)
    torch.testing.assert_close(a.log_likelihood, b.log_likelihood)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, x, t: m(x, t.flip(0)), SpecError, "times must be strictly increasing"),
        (lambda m, x, t: m(x, torch.zeros(5)), SpecError, "times"),
        (lambda m, x, t: m(x, t[:4]), ShapeError, "times"),
        (lambda m, x, t: m(x[..., :1], t), ShapeError, "obs_dim=2"),
        (lambda m, x, t: m(x, t, mask=torch.ones(3, 5)), ShapeError, "mask"),
        (lambda m, x, t: m(x, t, t.flip(0)), SpecError, "pred_times"),
        (lambda m, x, t: m(x, t, t - 1), SpecError, "before the first observation"),
        (lambda m, x, t: m.extrapolate(x, t, t), SpecError, "future_times"),
    ],
)
def test_bad_inputs(call, error, match):
    model, (x, t) = _model(), _series()
    with pytest.raises(error, match=match):
        call(model, x, t)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"obs_std": 0}, "obs_std"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"solver": "nope"}, "solver"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(SpecError, match=match):
        _model(**kw)


def _sines(n: int, generator: torch.Generator, times: torch.Tensor) -> torch.Tensor:
    """A family ``a·sin(ω t + φ)``: random amplitude, frequency and phase per series."""
    amp = 0.5 + torch.rand(n, 1, generator=generator)
    freq = 1.0 + 0.5 * torch.rand(n, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(n, 1, generator=generator)
    return (amp * torch.sin(freq * times + phase)).unsqueeze(-1)  # (n, T, 1)


@pytest.mark.slow
def test_fits_irregular_sines_better_than_the_mean_baseline():
    """Seeded short training on irregularly sampled sines (each series sees a random half of
    a random time grid): reconstruction of held-out series, at their unobserved points too,
    beats predicting each series' observed mean."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = LatentODE(
        1,
        latent_dim=4,
        hidden_size=16,
        func_hidden_dim=32,
        obs_std=0.05,
        solver="rk4",
        step_size=0.5,
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = 150
    for step in range(steps):
        times = torch.sort(torch.rand(16, generator=g) * 5).values
        x = _sines(32, g, times)
        mask = (torch.rand(x.shape, generator=g) < 0.5).float()
        loss = model.loss(x, times, mask, kl_weight=min(1.0, step / 50))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    times = torch.sort(torch.rand(16, generator=g) * 5).values
    x = _sines(200, g, times)
    mask = (torch.rand(x.shape, generator=g) < 0.5).float()
    with torch.no_grad():
        pred = model(x, times, mask=mask)
    baseline = (x * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1)
    hidden = 1 - mask
    mse = (((pred - x) ** 2) * hidden).sum() / hidden.sum()
    mse_base = (((baseline - x) ** 2) * hidden).sum() / hidden.sum()
    print(f"latent ODE {mse:.4f} vs mean baseline {mse_base:.4f} on unobserved points")
    assert mse < 0.5 * mse_base


def test_repr_reset_and_registered_example():
    from netarchitect.registry import get_block

    model = _model()
    assert "obs_dim=2, latent_dim=3" in repr(model)
    before = model.decoder.weight.clone()
    model.reset_parameters()
    assert not torch.equal(before, model.decoder.weight)
    ex = get_block("latent_ode").example()
    assert LatentODE(**ex.kwargs)(*ex.inputs).shape == (2, 5, 2)
