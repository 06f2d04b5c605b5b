"""FFJORD CNF: a normalised density, unbiased Hutchinson traces, invertibility, errors."""

from __future__ import annotations

import pytest
import torch

from netarchitect.errors import SpecError
from netarchitect.models.cnf import CNF, divergence

FIXED = {"solver": "rk4", "step_size": 0.25}


def _flow(**kwargs) -> CNF:
    torch.manual_seed(0)
    return CNF(2, hidden_dim=16, **kwargs)


def test_density_integrates_to_one_on_a_grid() -> None:
    flow = _flow(rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # a flow far from the identity: peak density 0.196, not N(0, I)'s 0.159
        for p in flow.parameters():
            p.mul_(3)
    side = torch.linspace(-6, 6, 97)
    grid = torch.cartesian_prod(side, side)  # (97², 2)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    cell = (side[1] - side[0]) ** 2
    assert flow.nfe > 0 and float(density.max()) > 0.18
    assert abs(float(density.sum() * cell) - 1.0) < 0.02


def test_divergence_hutchinson_is_unbiased_for_the_exact_trace() -> None:
    torch.manual_seed(0)
    a = torch.randn(3, 3, dtype=torch.float64)
    z = torch.randn(20000, 3, dtype=torch.float64, requires_grad=True)
    dz = torch.tanh(z) @ a.T
    exact = divergence(dz, z, create_graph=False)
    ref = (1 - torch.tanh(z).pow(2)) @ torch.diagonal(a)
    torch.testing.assert_close(exact.detach(), ref)
    dz = torch.tanh(z) @ a.T
    est = divergence(dz, z, noise=torch.randn_like(z), create_graph=False)
    err = (est - exact).detach()
    assert abs(float(err.mean())) < 4 * float(err.std()) / len(err) ** 0.5


def test_hutchinson_log_prob_agrees_with_exact_in_expectation() -> None:
    exact, hutch = _flow(trace="exact", **FIXED), _flow(trace="hutchinson", **FIXED)
    assert exact.exact and not hutch.exact
    x = torch.randn(3, 2).repeat_interleave(2000, dim=0)  # each point 2000 times
    with torch.no_grad():
        ref = exact.log_prob(x).view(3, 2000)
        est = hutch.log_prob(x).view(3, 2000)
    torch.testing.assert_close(ref[:, 0:1].expand_as(ref), ref)  # exact: no noise
    se = est.std(1) / 2000**0.5
    assert ((est.mean(1) - ref[:, 0]).abs() < 4 * se + 1e-6).all()


def test_sample_inverts_the_flow_and_trains() -> None:
    flow = _flow(rtol=1e-7, atol=1e-7).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        z, _ = flow.to_latent(x)
        torch.testing.assert_close(flow.from_latent(z), x, rtol=1e-5, atol=1e-5)
    samples = flow.sample(7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 2) and torch.isfinite(samples).all()
    loss = -flow(x).mean()
    loss.backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_auto_trace_and_meta_device() -> None:
    assert not CNF(10, hidden_dim=4).exact
    assert CNF(3, hidden_dim=4).exact
    meta = CNF(3, hidden_dim=4, device="meta")
    assert meta(torch.empty(5, 3, device="meta")).shape == (5,)
    CNF(2, hidden_dim=4).reset_parameters()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"trace": "hutch"}, "trace"), ({"t1": 0}, "t1"), ({"solver": "rk5"}, "dopri5")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        CNF(2, **kwargs)


def test_example_script_trains_and_writes_a_png(tmp_path, capsys) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "cnf_density.py"
    spec = importlib.util.spec_from_file_location("example_cnf_density", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    out = tmp_path / "cnf.png"
    result = module.main(["--steps", "3", "--out", str(out)])
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert abs(result.integral - 1) < 0.05 and result.nfe == 16
    assert "density integral" in capsys.readouterr().out
