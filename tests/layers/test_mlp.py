import functools

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.mlp import (
    GEGLU,
    GLU,
    MLP,
    GatedMLP,
    ReGLU,
    SwiGLU,
    gated_hidden_dim,
    get_mlp_layer,
)


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_mlp_formula_and_shapes():
    mlp = MLP(8, mlp_ratio=2.0, out_dim=5).eval()
    assert mlp.fc1.weight.shape == (16, 8) and mlp.fc2.weight.shape == (5, 16)
    x = _x(2, 3, 8)
    expected = F.linear(
        F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias
    )
    assert_close(mlp(x), expected)
    relu = MLP(8, hidden_dim=4, act_layer="relu", bias=False)
    assert relu.fc1.bias is None and relu.fc1.out_features == 4
    assert_close(relu(x), relu.fc2(F.relu(relu.fc1(x))))


@pytest.mark.parametrize(
    ("cls", "act"),
    [(GLU, torch.sigmoid), (SwiGLU, F.silu), (GEGLU, F.gelu), (ReGLU, F.relu), (GatedMLP, F.silu)],
)
def test_gated_variants_equal_hand_formula(cls, act):
    m = cls(8, hidden_dim=6).eval()
    x = _x(2, 3, 8)
    w1, w3, w2 = m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight
    assert_close(m(x), (act(x @ w1.T) * (x @ w3.T)) @ w2.T)
    assert m.gate_proj.bias is None


def test_gated_hidden_dim_rule():
    assert gated_hidden_dim(4096, 4.0, 256) == 11008  # LLaMA-7B
    assert gated_hidden_dim(16) == 42
    assert SwiGLU(16).gate_proj.out_features == 42
    assert SwiGLU(16, multiple_of=8).up_proj.out_features == 48
    m = GatedMLP(8, hidden_dim=5, bias=True, out_dim=3, act_layer="gelu")
    assert m.down_proj.weight.shape == (3, 5) and m.up_proj.bias is not None
    assert isinstance(SwiGLU(8, act_layer="relu").act, torch.nn.ReLU)


def test_factory():
    assert get_mlp_layer("SwiGLU") is SwiGLU
    assert get_mlp_layer("mlp") is MLP
    p = functools.partial(MLP, act_layer="relu")
    assert get_mlp_layer(p) is p
    with pytest.raises(SpecError, match="not None"):
        get_mlp_layer(None)
    with pytest.raises(ValueError, match="did you mean"):
        get_mlp_layer("swigl")


def test_dropout_and_reset():
    m = MLP(8, drop=0.5).train()
    x = _x(4, 8)
    assert not torch.equal(m(x), m.eval()(x))
    for mod in (MLP(8), SwiGLU(8)):
        before = [p.clone() for p in mod.parameters()]
        mod.reset_parameters()
        assert any(not torch.equal(a, b) for a, b in zip(before, mod.parameters()))


def test_meta_and_dtype():
    for cls in (MLP, SwiGLU):
        m = cls(8, device="meta", dtype=torch.float64)
        assert all(p.is_meta and p.dtype == torch.float64 for p in m.parameters())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"mlp_ratio": -1.0}, "mlp_ratio"),
        ({"mlp_ratio": 0.01}, "hidden_dim=0"),
        ({"out_dim": -2}, "out_dim"),
        ({"drop": 1.5}, "drop"),
    ],
)
def test_bad_arguments(kw, match):
    args = {"dim": 8, **kw}
    with pytest.raises(SpecError, match=match):
        MLP(**args)
    with pytest.raises(SpecError, match=match):
        GatedMLP(**args)


def test_gated_bad_multiple():
    with pytest.raises(SpecError, match="multiple_of"):
        SwiGLU(8, multiple_of=0)
