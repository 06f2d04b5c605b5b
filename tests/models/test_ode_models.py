"""ODE-ResNet: spec layout, solver arguments reaching every block, ANODE and adjoint stages."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.layers.ode import ODEBlock
from netarchitect.models.ode import ode_resnet

SMALL = {"widths": (4, 6), "stem_width": 4, "num_classes": 3, "img_size": 8, "seed": 0}


def _odes(model) -> list[ODEBlock]:
    return [m for m in model.modules() if isinstance(m, ODEBlock)]


def test_stages_are_ode_blocks_with_counted_depth() -> None:
    model = na.create_model("odenet_tiny", **SMALL).eval()
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 3)
    blocks = _odes(model)
    assert len(blocks) == 2 and all(b.nfe_forward > 0 for b in blocks)
    assert [f["num_chs"] for f in model.feature_info] == [4, 6]
    assert model.spec.node("s1_ode").params["func"]["name"] == "ode_conv_func"


def test_augmented_adjoint_fixed_step_variant_trains() -> None:
    model = ode_resnet(
        **SMALL, solver="rk4", step_size=0.5, adjoint=True, augment_dim=2, drop_rate=0.1
    )
    assert [f["num_chs"] for f in model.feature_info] == [6, 8]
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    blocks = _odes(model)
    assert all(b.nfe_forward == 8 and b.nfe_backward > 0 and b.adjoint for b in blocks)


def test_bad_widths() -> None:
    with pytest.raises(SpecError, match="widths"):
        ode_resnet(widths=())
    with pytest.raises(SpecError, match="widths"):
        ode_resnet(widths=(4, 0))


def test_ode_rnn_with_zero_dynamics_is_a_gru() -> None:
    torch.manual_seed(0)
    from netarchitect.models.ode import ODERNN

    rnn = ODERNN(3, 4, func_hidden_dim=5, solver="rk4", step_size=0.25)
    with torch.no_grad():
        rnn.ode.func.out.weight.zero_(), rnn.ode.func.out.bias.zero_()
    gru = torch.nn.GRU(3, 4, batch_first=True)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(gru, f"{name}_l0").data.copy_(getattr(rnn.cell, name))
    x, times = torch.randn(2, 4, 3), torch.tensor([0.0, 0.5, 0.6, 2.0])
    torch.testing.assert_close(rnn(x, times), gru(x)[0])
    assert rnn.ode.nfe_forward == 4 * (2 + 1 + 6)  # rk4 steps of <= 0.25 over each gap


def test_ode_rnn_hidden_state_evolves_between_observations_and_bad_times() -> None:
    torch.manual_seed(0)
    from netarchitect.models.ode import ODERNN

    rnn = ODERNN(2, 3, func_hidden_dim=4)
    x = torch.randn(1, 3, 2)
    near, far = rnn(x, torch.tensor([0.0, 0.1, 0.2])), rnn(x, torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(near[:, 0], far[:, 0])
    assert not torch.allclose(near[:, -1], far[:, -1])
    with pytest.raises(SpecError, match="times"):
        rnn(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(SpecError, match="increasing"):
        rnn(x, torch.tensor([0.0, 1.0, 1.0]))
    rnn.reset_parameters()
