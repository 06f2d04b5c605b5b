"""Basic layers, plus contract checks over every block of the layer modules owned here."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers import _factory
from netarchitect.layers import basic as B
from netarchitect.registry import get_block, list_blocks

OWN_MODULES = {
    f"netarchitect.layers.{m}"
    for m in (
        "norm",
        "activation",
        "basic",
        "connections",
        "conv_blocks",
        "channel_attention",
        "pooling",
        "sampling",
    )
}
OWN_BLOCKS = [n for n in list_blocks() if get_block(n).__module__ in OWN_MODULES]


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(2))


# --- contract over every owned block -------------------------------------------------------------


def test_owned_blocks_are_registered() -> None:
    assert len(OWN_BLOCKS) >= 55
    for name in ("linear", "conv2d", "rmsnorm", "gelu", "basic_block", "blurpool", "patch_merging"):
        assert name in OWN_BLOCKS


@pytest.mark.parametrize("name", OWN_BLOCKS)
def test_block_contract(name: str) -> None:
    cls = get_block(name)
    doc = inspect.getdoc(cls) or ""
    assert "Shapes:" in doc, f"{name}: docstring lacks a Shapes: section"
    sig = inspect.signature(cls.__init__)
    assert {"device", "dtype"} <= sig.parameters.keys() or name == "identity"
    positional = [
        p.name
        for p in sig.parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
    ]
    # only channel arguments (and DropPath's probability) may be positional
    channel_args = {"in_channels", "out_channels", "in_features", "out_features", "dim", "p"}
    assert set(positional) <= channel_args, positional
    ex = cls.example()
    meta = cls(**ex.kwargs, device="meta")
    tensors = list(meta.parameters()) + list(meta.buffers())
    assert all(t.device.type == "meta" for t in tensors), name
    meta.reset_parameters()
    m = cls(**ex.kwargs, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in m.parameters()), name
    m.reset_parameters()
    out = m(*(t.double() for t in ex.inputs))
    assert torch.isfinite(out).all()


# --- linear / conv -------------------------------------------------------------------------------


def test_linear_matches_functional() -> None:
    m = B.Linear(5, 3)
    x = _x(4, 5)
    assert_close(m(x), F.linear(x, m.weight, m.bias))
    assert B.Linear(5, 3, bias=False).bias is None
    assert isinstance(m, nn.Linear)


def test_conv2d_default_padding_keeps_size_and_matches_functional() -> None:
    m = B.Conv2d(3, 4, kernel_size=5, dilation=2)
    x = _x(2, 3, 9, 9)
    assert m.padding == (4, 4)
    assert_close(m(x), F.conv2d(x, m.weight, m.bias, padding=4, dilation=2))
    assert m(x).shape == (2, 4, 9, 9)
    assert B.Conv2d(3, 4, kernel_size=3, stride=2)(x).shape == (2, 4, 5, 5)
    assert B.Conv2d(3, 4, kernel_size=(3, 5)).padding == (1, 2)
    assert B.Conv2d(3, 4, kernel_size=3, padding=0)(x).shape == (2, 4, 7, 7)
    assert B.Conv2d(3, 4, kernel_size=3, padding="same")(x).shape == (2, 4, 9, 9)


def test_conv1d_matches_functional() -> None:
    m = B.Conv1d(4, 8, kernel_size=3, groups=2, bias=False)
    x = _x(2, 4, 11)
    assert_close(m(x), F.conv1d(x, m.weight, None, padding=1, groups=2))


def test_same_padding() -> None:
    assert B.same_padding(3) == 1
    assert B.same_padding(4) == 1
    assert B.same_padding(3, 3) == 3
    assert B.same_padding((3, 5), 2) == (2, 4)
    assert B.same_padding(3, (1, 2)) == (1, 2)


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        (
            lambda: B.Conv2d(64, 32, kernel_size=3, groups=3),
            "groups=3 does not divide in_channels=64",
        ),
        (
            lambda: B.Conv2d(6, 4, kernel_size=3, groups=3),
            "groups=3 does not divide out_channels=4",
        ),
        (lambda: B.Conv2d(3, 4, kernel_size=0), "kernel_size=0"),
        (lambda: B.Conv2d(3, 4, kernel_size=(3, -1)), r"kernel_size=\(3, -1\)"),
        (lambda: B.Conv1d(0, 4, kernel_size=3), "in_channels=0"),
        (lambda: B.Conv1d(3, 4, kernel_size=3, padding_mode="mirror"), "padding_mode='mirror'"),
        (lambda: B.Linear(3, 0), "out_features=0"),
        (lambda: B.Linear(3.0, 2), "in_features=3.0"),
        (lambda: B.Dropout(p=1.5), r"p=1.5 must be in \[0, 1\]"),
        (lambda: B.Conv2d(3, 4, kernel_size=3, groups=0), "groups=0"),
    ],
)
def test_bad_arguments(ctor, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ctor()


# --- parameter-free layers -----------------------------------------------------------------------


def test_dropout_flatten_identity() -> None:
    x = _x(4, 3, 2, 2)
    d = B.Dropout(p=0.5)
    assert torch.equal(d.eval()(x), x)
    y = d.train()(x)
    assert set(torch.unique(y / x.where(x != 0, 1.0)).round(decimals=4).tolist()) <= {0.0, 2.0}
    assert B.Flatten()(x).shape == (4, 12)
    assert B.Flatten(start_dim=2)(x).shape == (4, 3, 4)
    ident = B.Identity(8, anything=1)
    assert ident(x) is x
    ident.reset_parameters()


# --- shared helpers ------------------------------------------------------------------------------


def test_make_divisible() -> None:
    assert _factory.make_divisible(32 * 0.75) == 24
    assert _factory.make_divisible(18) == 24  # 16 would lose more than 10%
    assert _factory.make_divisible(3, 8) == 8
    assert _factory.make_divisible(100, 8, min_value=16) == 104


def test_check_helpers() -> None:
    with pytest.raises(SpecError, match="x=-1 must be a non-negative number"):
        _factory.check_non_negative("x", -1)
    with pytest.raises(SpecError, match="x=nan"):
        _factory.check_non_negative("x", float("nan"))
    with pytest.raises(SpecError, match="mode='a' must be one of 'b', 'c'"):
        _factory.check_choice("mode", "a", ("b", "c"))
    assert _factory.canonical_name("Layer_Norm-2d") == "layernorm2d"


def test_resolver_accepts_signatureless_callables() -> None:
    # a builtin without an inspectable signature is assumed to accept device/dtype
    table = {"none": B.Identity}
    assert _factory.resolve_layer(max, table, kind="x") is max


def test_reset_children_recurses_into_containers() -> None:
    seq = nn.Sequential(nn.Sequential(B.Linear(2, 2)))
    with torch.no_grad():
        seq[0][0].weight.fill_(100.0)
    _factory.reset_children(seq)
    assert bool((seq[0][0].weight.abs() < 100).all())


def test_resolver_accepts_a_name_with_arguments() -> None:
    from netarchitect.layers import get_act_layer, get_norm_layer

    bn = get_norm_layer({"name": "batch_norm2d", "eps": 1e-3, "momentum": 0.01})(4)
    assert (bn.eps, bn.momentum, bn.num_features) == (1e-3, 0.01, 4)
    assert get_act_layer({"name": "leakyrelu", "negative_slope": 0.2})().negative_slope == 0.2
    assert get_norm_layer({"name": "layernorm"}) is get_norm_layer("layernorm")
    with pytest.raises(TypeError, match=r"no argument\(s\) \['epz'\] \(did you mean 'eps'\?\)"):
        get_norm_layer({"name": "batchnorm2d", "epz": 1e-3})
    with pytest.raises(TypeError, match="needs a 'name'"):
        get_norm_layer({"eps": 1e-3})
    with pytest.raises(_factory.UnknownLayerError, match="unknown norm layer 'batchnrm'"):
        get_norm_layer({"name": "batchnrm"})


def test_spec_with_layer_arguments_round_trips(tmp_path) -> None:
    import netarchitect as na

    spec = {
        "name": "t",
        "inputs": [{"name": "x", "shape": [3, 8, 8]}],
        "nodes": [{"id": "c", "block": "conv_norm_act", "inputs": ["x"], "params": {
            "out_channels": 4, "norm_layer": {"name": "batchnorm2d", "eps": 1e-3}}}],
        "outputs": ["c"],
    }
    model = na.build(spec)
    assert model.nodes["c"].norm.eps == 1e-3
    na.save_spec(model.spec, tmp_path / "t.yaml")
    assert na.build(tmp_path / "t.yaml").nodes["c"].norm.eps == 1e-3
    bad = {**spec, "nodes": [{**spec["nodes"][0], "params": {
        "out_channels": 4, "norm_layer": {"name": "batchnorm2d", "epz": 1e-3}}}]}
    with pytest.raises(na.SpecError, match=r"nodes\[0\].params.*did you mean 'eps'"):
        na.build(bad)
