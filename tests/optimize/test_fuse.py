"""optimize.fusion: BatchNorm folding, merged Q/K/V and dropout removal, with parity in eval,
the fused spec, and the input model left untouched; driven by ``list_models()``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

import netarchitect as na
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.connections import DropPath
from netarchitect.network import Network
from netarchitect.optimize._bn_fold import find_bn_pairs
from netarchitect.optimize.fusion import FusedModel, FusedQKVAttention, fuse
from netarchitect.registry import model_example

TOL = {"atol": 1e-5, "rtol": 1e-5}


def first_tensor(out):
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def randomise_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a fold of the defaults is
    almost the identity and would prove little)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return model


def small(name: str):
    ex = model_example(name)
    model = na.create_model(name, **ex.kwargs, seed=0)
    return randomise_norms(model).eval(), ex.inputs


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)


def count(model: nn.Module, kinds) -> int:
    return sum(isinstance(m, kinds) for m in model.modules())


# --------------------------------------------------------------------------- registry sweep


@pytest.mark.parametrize("name", na.list_models())
def test_every_model_fuses_with_parity_and_input_untouched(name: str) -> None:
    model, inputs = small(name)
    before = snapshot(model)
    fused = fuse(model)
    assert_same_state(model, before)
    assert not fused.training
    with torch.no_grad():
        torch.testing.assert_close(first_tensor(fused(*inputs)), first_tensor(model(*inputs)),
                                   **TOL)
    inner = fused.model if isinstance(fused, FusedModel) else fused
    assert find_bn_pairs(inner) == []  # every conv -> BN pair is folded
    assert count(fused, (_DropoutNd, DropPath)) == 0
    assert count(fused, MultiHeadAttention) == count(fused, FusedQKVAttention) + sum(
        m.context_dim != m.dim for m in fused.modules() if isinstance(m, MultiHeadAttention)
    )
    n_params = sum(p.numel() for p in model.parameters())
    n_bn = sum(p.numel() for m in model.modules() if isinstance(m, _BatchNorm)
               for p in m.parameters())
    assert sum(p.numel() for p in fused.parameters()) <= n_params
    assert sum(p.numel() for p in fused.parameters()) >= n_params - n_bn


@pytest.mark.parametrize("name", na.list_models())
def test_fused_spec_rebuilds_with_the_fused_weights(name: str) -> None:
    model, inputs = small(name)
    fused = fuse(model)
    if isinstance(fused, FusedModel):  # a block that cannot say "no norm": reasons given
        assert fused.unexpressed and all("cannot express" in r for r in fused.unexpressed.values())
        fused = fuse(model, keep_spec=True)
    assert isinstance(fused, Network) and type(fused) is type(model)
    rebuilt = na.build(na.load_spec(fused.spec.to_dict()), seed=1).eval()
    rebuilt.load_state_dict(fused.state_dict())
    with torch.no_grad():
        want = first_tensor(model(*inputs))
        torch.testing.assert_close(first_tensor(fused(*inputs)), want, **TOL)
        torch.testing.assert_close(first_tensor(rebuilt(*inputs)), want, **TOL)


# --------------------------------------------------------------------------- what is folded


def test_resnet_folds_every_batchnorm_and_stays_a_spec() -> None:
    model, inputs = small("resnet18")
    fused = fuse(model)
    assert isinstance(fused, Network) and count(fused, _BatchNorm) == 0
    blocks = [n for n in fused.spec.nodes if n.block in ("conv_norm_act", "basic_block")]
    assert len(blocks) >= 3 and all(n.params["norm_layer"] == "identity" for n in blocks)
    rebuilt = na.build(fused.spec, seed=1).eval()  # the convs gained biases in the spec
    rebuilt.load_state_dict(fused.state_dict())
    with torch.no_grad():
        want = first_tensor(model(*inputs))
        torch.testing.assert_close(first_tensor(rebuilt(*inputs)), want, **TOL)


def test_expressible_family_stays_a_spec_with_identity_norms() -> None:
    model, _ = small("mobilenet_v2")
    fused = fuse(model)
    assert isinstance(fused, Network) and count(fused, _BatchNorm) == 0
    blocks = [n for n in fused.spec.nodes if n.block in ("conv_norm_act", "inverted_residual")]
    assert blocks and all(n.params["norm_layer"] == "identity" for n in blocks)
    assert fused.spec.node("head_drop").block == "identity"


def test_densenet_keeps_pre_activation_norms() -> None:
    model, inputs = small("densenet121")
    fused = fuse(model)
    assert isinstance(fused, FusedModel)
    # norm1 of each dense layer and the transitions' norms precede an activation: not pairs
    assert 0 < count(fused, _BatchNorm) < count(model, _BatchNorm)
    assert "dense_block" in fused.unexpressed["s1_dense"]
    kept = fuse(model, keep_spec=True)
    with torch.no_grad():
        torch.testing.assert_close(kept(*inputs), model(*inputs), **TOL)


def test_flags_turn_each_transform_off() -> None:
    model, inputs = small("coatnet_lite_nano")
    none = fuse(model, bn=False, qkv=False, dropout=False)
    assert count(none, _BatchNorm) == count(model, _BatchNorm)
    assert count(none, FusedQKVAttention) == 0
    assert count(none, _DropoutNd) == count(model, _DropoutNd)
    assert na.spec_hash(none.spec) == na.spec_hash(model.spec)
    with torch.no_grad():
        torch.testing.assert_close(none(*inputs), model(*inputs), **TOL)


def test_training_mode_input_stays_in_training_mode() -> None:
    model, _ = small("mobilenet_v3_small")
    model.train()
    before = snapshot(model)
    fused = fuse(model)
    assert model.training and not fused.training
    assert_same_state(model, before)  # no BN statistics updated either


def test_float64_model_folds_in_float64() -> None:
    ex = model_example("efficientnet_b0")
    model = randomise_norms(na.create_model("efficientnet_b0", **ex.kwargs, seed=0,
                                            dtype=torch.float64)).eval()
    fused = fuse(model)
    assert {p.dtype for p in fused.parameters()} == {torch.float64}
    x = ex.inputs[0].double()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-12, rtol=1e-12)


def test_not_a_module_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        fuse("resnet18")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- plain modules


def plain_cnn() -> nn.Module:
    torch.manual_seed(0)
    return randomise_norms(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, bias=False), nn.BatchNorm2d(6, affine=False), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 8), nn.BatchNorm1d(8),
    )).eval()


def test_plain_sequential_folds_conv_and_linear_pairs() -> None:
    model = plain_cnn()
    x = torch.randn(2, 3, 6, 6)
    fused = fuse(model)
    assert type(fused) is nn.Sequential
    assert count(fused, (_BatchNorm, nn.Dropout)) == 0
    assert fused[3].bias is not None and fused[7].bias is not None
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), **TOL)


class SharedOutput(nn.Module):
    """``bn(conv(x)) + conv(x)``: the conv output has two readers, so no fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class CalledTwice(nn.Module):
    """The same conv feeds the norm and is called again: folding would change both calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


class Untraceable(nn.Module):
    """Data-dependent control flow at the top: fx fails here, the child is still searched."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4))

    def forward(self, x):
        if x.sum() > 0:
            return self.body(x)
        return self.body(-x)


@pytest.mark.parametrize(
    ("module", "folds"),
    [
        (SharedOutput(), 0),
        (CalledTwice(), 0),
        (Untraceable(), 1),
        (nn.Sequential(nn.ConvTranspose1d(4, 4, 1), nn.BatchNorm1d(4)), 0),
        (nn.Sequential(nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4, track_running_stats=False)), 0),
        (nn.Sequential(nn.Conv1d(4, 3, 1), nn.Conv1d(3, 4, 1), nn.BatchNorm1d(4)), 1),
    ],
    ids=["shared-output", "called-twice", "untraceable-parent", "transposed", "batch-stats",
         "chain"],
)
def test_only_safe_pairs_fold(module: nn.Module, folds: int) -> None:
    randomise_norms(module).eval()
    x = torch.randn(3, 4, 5)
    fused = fuse(module)
    assert count(module, _BatchNorm) - count(fused, _BatchNorm) == folds
    with torch.no_grad():
        torch.testing.assert_close(fused(x), module(x), **TOL)


# --------------------------------------------------------------------------- spec-level pairs


def node_spec(extra_reader: bool = False, output_conv: bool = False) -> dict:
    nodes = [
        {"id": "conv", "block": "conv2d", "params": {"out_channels": 6, "kernel_size": 3,
                                                     "bias": False}, "inputs": ["x"]},
        {"id": "bn", "block": "batchnorm2d", "inputs": ["conv"]},
        {"id": "act", "block": "relu", "inputs": ["bn"]},
        {"id": "drop", "block": "dropout", "params": {"p": 0.3}, "inputs": ["act"]},
    ]
    if extra_reader:
        nodes.append({"id": "res", "block": "identity", "inputs": ["drop", "conv"],
                      "merge": "add"})
    return {"name": "pairs", "inputs": {"x": {"shape": [3, 8, 8]}}, "nodes": nodes,
            "outputs": [nodes[-1]["id"], "conv"] if output_conv else [nodes[-1]["id"]]}


def test_batchnorm_node_after_conv_node_folds_into_a_biased_conv(tmp_path) -> None:
    model = randomise_norms(na.build(node_spec(), seed=0)).eval()
    x = torch.randn(2, 3, 8, 8)
    fused = fuse(model)
    assert isinstance(fused, Network)
    assert fused.spec.node("bn").block == "identity"
    assert fused.spec.node("conv").params["bias"] is True
    assert fused.spec.node("drop").block == "identity"
    path = na.save_spec(fused.spec, tmp_path / "fused.yaml")
    rebuilt = na.build(path, seed=3).eval()
    rebuilt.load_state_dict(fused.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), **TOL)
        torch.testing.assert_close(rebuilt(x), model(x), **TOL)


@pytest.mark.parametrize("kwargs", [{"extra_reader": True}, {"output_conv": True}])
def test_conv_node_read_elsewhere_is_not_folded(kwargs) -> None:
    model = randomise_norms(na.build(node_spec(**kwargs), seed=0)).eval()
    fused = fuse(model)
    assert fused.spec.node("bn").block == "batchnorm2d"
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for got, want in zip(fused(x) if kwargs.get("output_conv") else [fused(x)],
                             model(x) if kwargs.get("output_conv") else [model(x)],
                             strict=True):
            torch.testing.assert_close(got, want, **TOL)


# --------------------------------------------------------------------------- merged Q/K/V


def attention(**kwargs) -> MultiHeadAttention:
    torch.manual_seed(0)
    return MultiHeadAttention(16, 4, **kwargs).eval()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_kv_heads": 2, "pos": "rope"}, {"num_kv_heads": 1, "qkv_bias": False},
     {"qk_norm": "rmsnorm", "pos": "alibi"}],
    ids=["mha", "gqa-rope", "mqa-nobias", "qknorm-alibi"],
)
@pytest.mark.parametrize("tokens", [3, 40])
def test_merged_qkv_matches_and_keeps_the_state_dict_layout(kwargs, tokens) -> None:
    attn = attention(**kwargs)
    x = torch.randn(2, tokens, 16)
    merged = fuse(attn)
    assert isinstance(merged, FusedQKVAttention)
    assert set(merged.state_dict()) == set(attn.state_dict())
    assert sum(p.numel() for p in merged.parameters()) == sum(
        p.numel() for p in attn.parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(x), attn(x), **TOL)
        torch.testing.assert_close(merged(x, is_causal=True), attn(x, is_causal=True), **TOL)
        if "pos" not in kwargs:  # cross-attention (no positions) uses the row views
            ctx = torch.randn(2, 5, 16)
            torch.testing.assert_close(merged(x, ctx), attn(x, ctx), **TOL)
    back = attention(**kwargs)
    torch.nn.init.zeros_(back.q_proj.weight)
    back.load_state_dict(merged.state_dict())  # merged weights load into the unmerged block
    assert_same_state(back, snapshot(attn))
    again = fuse(attention(**kwargs))
    torch.nn.init.zeros_(again.qkv_weight)
    again.load_state_dict(attn.state_dict())  # and unmerged weights into the merged one
    with torch.no_grad():
        torch.testing.assert_close(again(x), attn(x), **TOL)


def test_merge_is_idempotent_and_keep_vars_gives_views() -> None:
    from netarchitect.optimize._qkv import merge_qkv

    merged = fuse(attention())
    assert merge_qkv(merged) is merged
    state = merged.state_dict(keep_vars=True)
    assert state["q_proj.weight"].data_ptr() == merged.qkv_weight.data_ptr()
    assert merged.q_proj.in_features == 16 and merged.v_proj.out_features == 16
    assert "rows=0:16" in repr(merged.q_proj)


def test_cross_attention_of_another_width_is_left_unmerged() -> None:
    attn = MultiHeadAttention(16, 4, context_dim=12).eval()
    assert type(fuse(attn)) is MultiHeadAttention


def test_fused_language_model_generates_the_same_tokens() -> None:
    from netarchitect.generation import generate

    model, _ = small("llama-tiny")
    fused = fuse(model)
    ids = torch.randint(0, 64, (2, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(generate(fused, ids, 6, do_sample=False),
                       generate(model, ids, 6, do_sample=False))


# --------------------------------------------------------------------------- internals


def test_helpers_refuse_what_they_cannot_express() -> None:
    from netarchitect.optimize import fusion as fuse_module

    assert fuse_module._mentions({"stages": ["a", "conv"], "n": 3}, {"conv"})
    assert not fuse_module._mentions({"kind": "x", "reductions": {}}, {"conv"})
    assert fuse_module._norm_params("conv_norm_act", {"norm_layer": "no_such_norm"}) == {}
    assert fuse_module._norm_params("conv_norm_act", {}) == {"norm_layer": "identity"}
    spec = na.load_spec(node_spec())
    bad = spec.replace_node("conv", params={"out_channels": 6, "kernel_size": 3, "nope": 1})
    reasons = fuse_module._mismatch(bad, {"conv": {}})
    assert "does not build" in reasons["conv"]


def test_benchmark_runs_and_records(tmp_path) -> None:
    import json

    from benchmarks import bench_optimize_fuse

    rows = bench_optimize_fuse.main(["--models", "resnet18", "--size", "32", "--batch", "1",
                                     "--warmup", "0", "--repeats", "1", "--clock", "cpu",
                                     "--results-dir", str(tmp_path)])
    assert rows[0]["params_after"] < rows[0]["params_before"] and rows[0]["ratio"] > 0
    cases = json.loads((tmp_path / "optimize.json").read_text())["cases"]
    assert cases["fuse_resnet18_fwd_b1_32_cpu"]["extra"]["max_abs_diff"] < 1e-3
