"""ODEBlock: closed-form solutions, adjoint == backprop, exact NFE and FLOP accounting, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from netarchitect.analysis import count_flops
from netarchitect.errors import ShapeError, SpecError
from netarchitect.layers.ode import ConvODEFunc, MLPODEFunc, ODEBlock, ode_func_names

TIGHT = {"rtol": 1e-9, "atol": 1e-11}


class Linear(nn.Module):
    """``dz/dt = A z`` with a fixed matrix; counts its evaluations."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)
        self.calls = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return z @ self.a.T


def test_exponential_decay_matches_closed_form() -> None:
    z0 = torch.tensor([[1.0], [-2.5]], dtype=torch.float64)
    block = ODEBlock(Linear(torch.tensor([[-0.7]], dtype=torch.float64)), t_span=(0, 2), **TIGHT)
    torch.testing.assert_close(block(z0), z0 * math.exp(-1.4), rtol=0, atol=1e-5)


def test_harmonic_oscillator_matches_closed_form() -> None:
    w = 2.0
    a = torch.tensor([[0.0, 1.0], [-(w**2), 0.0]], dtype=torch.float64)
    z0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = 3.0
    block = ODEBlock(Linear(a), t_span=(0, t), solver="dopri8", **TIGHT)
    x = math.cos(w * t) + 0.5 / w * math.sin(w * t)
    v = -w * math.sin(w * t) + 0.5 * math.cos(w * t)
    torch.testing.assert_close(
        block(z0), torch.tensor([[x, v]], dtype=torch.float64), rtol=0, atol=1e-5
    )


def _grads(adjoint: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    func = MLPODEFunc(3, hidden_dim=8, dtype=torch.float64)
    block = ODEBlock(func, adjoint=adjoint, **TIGHT)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    block(x).pow(2).sum().backward()
    return [x.grad, *(p.grad for p in func.parameters())]


def test_adjoint_gradients_equal_backprop() -> None:
    for ours, ref in zip(_grads(True), _grads(False), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("adjoint", [False, True])
def test_nfe_counts_equal_the_function_calls(adjoint: bool) -> None:
    func = Linear(torch.tensor([[-1.0, 0.3], [0.2, -0.5]]))
    block = ODEBlock(func, adjoint=adjoint)
    x = torch.randn(3, 2, requires_grad=True)
    out = block(x)
    assert block.nfe_forward == func.calls > 0
    forward_calls = func.calls
    out.sum().backward()
    assert block.nfe_backward == func.calls - forward_calls
    assert (block.nfe_backward > 0) == adjoint
    block.reset()
    assert block.nfe_forward == block.nfe_backward == 0


def test_fixed_step_solvers_count_stages_times_steps() -> None:
    func = Linear(torch.eye(2))
    x = torch.randn(1, 2)
    block = ODEBlock(func, solver="rk4", step_size=0.25)
    block(x)
    assert block.nfe_forward == 16  # 4 steps x 4 stages
    block = ODEBlock(func, solver="euler", t_span=(0, 0.5, 1))
    block(x)
    assert block.nfe_forward == 2  # one step per interval


@pytest.mark.parametrize("solver", ["dopri5", "rk4"])
def test_count_flops_is_nfe_times_one_evaluation(solver: str) -> None:
    torch.manual_seed(0)
    func = ConvODEFunc(2, hidden_channels=4)
    block = ODEBlock(func, solver=solver)
    x = torch.randn(2, 2, 5, 5)
    total = count_flops(block, x)
    one = count_flops(func, (torch.tensor(0.0), x))
    assert block.nfe_forward > 0 and one.macs > 0
    assert total.macs == block.nfe_forward * one.macs
    assert total.flops == block.nfe_forward * one.flops


def test_augmented_ode_appends_zero_channels() -> None:
    func = Linear(torch.zeros(5, 5))  # dz/dt = 0: the output is the augmented input
    x = torch.randn(2, 3)
    out = ODEBlock(func, augment_dim=2)(x)
    torch.testing.assert_close(out, torch.cat([x, torch.zeros(2, 2)], dim=1))
    conv = ODEBlock(ConvODEFunc(3), augment_dim=1)
    assert conv(torch.randn(2, 2, 4, 4)).shape == (2, 3, 4, 4)


def test_kinetic_regulariser_matches_closed_form_and_jacobian_is_estimated() -> None:
    a = -0.5
    func = Linear(torch.tensor([[a, 0.0], [0.0, a]], dtype=torch.float64))
    block = ODEBlock(func, regularize=("kinetic", "jacobian"), **TIGHT).train()
    z0 = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    out = block(z0)
    torch.testing.assert_close(out, z0 * math.exp(a), rtol=0, atol=1e-6)
    norms = z0.pow(2).sum(1)
    kinetic = (a**2 * norms * (math.exp(2 * a) - 1) / (2 * a)).mean()
    torch.testing.assert_close(block.regularization["kinetic"], kinetic, rtol=1e-5, atol=0)
    assert block.regularization["jacobian"] > 0
    block.regularization["jacobian"].backward()  # differentiable w.r.t. the dynamics
    assert func.a.grad is not None
    block.eval()
    block(z0)
    assert block.regularization == {}


def test_func_from_a_layer_type_and_meta_device() -> None:
    block = ODEBlock({"name": "ode_mlp_func", "dim": 3, "hidden_dim": 4}, solver="rk4")
    assert isinstance(block.func, MLPODEFunc)
    assert {"ode_mlp_func", "ode_conv_func"} <= set(ode_func_names())
    meta = ODEBlock({"name": "ode_mlp_func", "dim": 3}, device="meta")
    assert meta(torch.empty(2, 3, device="meta")).shape == (2, 3)
    assert "solver='dopri5'" in repr(meta)


def test_reset_parameters_reaches_plain_funcs() -> None:
    torch.manual_seed(0)
    func = nn.Sequential()
    func.add_module("lin", nn.Linear(2, 2))
    block = ODEBlock(func)
    before = func.lin.weight.clone()
    block.reset_parameters()
    assert not torch.equal(before, func.lin.weight)
    mlp = ODEBlock(MLPODEFunc(2, hidden_dim=3))
    mlp.reset_parameters()


@pytest.mark.parametrize(
    ("kwargs", "path", "match"),
    [
        ({"solver": "rk5"}, None, "dopri5"),
        ({"rtol": 0}, "rtol", "rtol=0"),
        ({"atol": -1e-3}, "atol", "atol"),
        ({"t_span": (1, 0)}, "t_span", "increasing"),
        ({"t_span": (0,)}, "t_span", "increasing"),
        ({"t_span": "ab"}, "t_span", "numbers"),
        ({"step_size": 0}, "step_size", "step_size"),
        ({"augment_dim": -1}, None, "augment_dim"),
        ({"regularize": ("speed",)}, None, "kinetic"),
        ({"func": None}, "func", "func"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, path: str | None, match: str) -> None:
    args = {"func": MLPODEFunc(2, hidden_dim=3), **kwargs}
    with pytest.raises(SpecError, match=match) as err:
        ODEBlock(**args)
    if path is not None:
        assert err.value.path == path


def test_func_output_shape_must_match_the_state() -> None:
    block = ODEBlock(_Wrong())
    with pytest.raises(ShapeError, match="shape of z") as err:
        block(torch.randn(2, 3))
    assert err.value.path == "func"


class _Wrong(nn.Module):
    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z[:, :1]


def test_module_funcs_move_to_the_requested_dtype_and_examples_run() -> None:
    func = MLPODEFunc(2, hidden_dim=3)
    block = ODEBlock(func, dtype=torch.float64, solver="rk4")
    assert func.out.weight.dtype == torch.float64
    assert block(torch.randn(2, 2, dtype=torch.float64)).dtype == torch.float64
    for cls in (MLPODEFunc, ConvODEFunc):
        ex = cls.example()
        assert cls(**ex.kwargs)(*ex.inputs).shape == ex.inputs[1].shape
    for ex in ODEBlock.examples():
        assert ODEBlock(**ex.kwargs)(*ex.inputs).shape[0] == 4


def test_missing_torchdiffeq_is_a_clear_error(monkeypatch) -> None:
    from netarchitect.errors import NetArchitectError
    from netarchitect.layers import ode

    monkeypatch.setattr(ode, "torchdiffeq", None)
    with pytest.raises(NetArchitectError, match=r"netarchitect\[ode\]"):
        ODEBlock(MLPODEFunc(2, hidden_dim=3))
