import pytest
import torch
from torch import nn

import netarchitect as na
from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.init import (
    INITIALIZERS,
    InitPolicy,
    InitRule,
    derive_seed,
    get_policy,
    initialize,
    materialize,
)


class Branchy(nn.Module):
    """A toy residual block that opts in to zero-init of its last norm."""

    def __init__(self, order: str = "ab", device=None) -> None:
        super().__init__()
        for name in order:
            setattr(self, name, nn.Linear(4, 4, device=device))
        self.norm = nn.LayerNorm(4, device=device)
        self.attn = nn.MultiheadAttention(4, 2, device=device)  # has _reset_parameters only

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.norm.weight)


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


def test_derive_seed_is_stable_and_path_dependent():
    assert derive_seed(0, "a.b") == derive_seed(0, "a.b")
    assert derive_seed(0, "a.b") != derive_seed(0, "a.c") != derive_seed(1, "a.b")
    assert 0 <= derive_seed(123, "x") < 2**63


def test_meta_materialize_equals_cpu_initialize_in_any_construction_order():
    cpu = initialize(Branchy("ab"), seed=3)
    reordered = initialize(Branchy("ba"), seed=3)
    meta = materialize(Branchy("ab", device="meta"), "cpu", seed=3)
    _assert_same(_state(cpu), _state(meta))
    _assert_same(_state(cpu), _state(reordered))
    other = initialize(Branchy("ab"), seed=4)
    assert not torch.equal(other.a.weight, cpu.a.weight)


def test_policy_first_matching_rule_wins():
    policy = InitPolicy.from_config([
        {"init": "zeros", "names": ["a"], "params": ["*"]},
        {"init": "ones", "modules": ["Linear"], "params": ["weight", "bias"]},
        {"init": "constant", "modules": [nn.LayerNorm], "params": ["bias"], "args": {"value": 0.5}},
    ])
    m = initialize(Branchy(), seed=0, policy=policy)
    assert torch.count_nonzero(m.a.weight) == 0 and torch.count_nonzero(m.a.bias) == 0
    assert torch.all(m.b.weight == 1) and torch.all(m.b.bias == 1)
    assert torch.all(m.norm.bias == 0.5)


def test_zero_last_in_residual_rule():
    m = initialize(Branchy(), seed=0, policy=[{"init": "zero_last_in_residual"}])
    assert torch.count_nonzero(m.norm.weight) == 0
    m = initialize(Branchy(), seed=0, policy=get_policy("resnet_zero_init"))
    assert torch.count_nonzero(m.norm.weight) == 0


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_every_initializer_is_seeded(name):
    rule = [{"init": name, "modules": ["Linear"], "params": ["weight"]}]
    a = initialize(nn.Linear(8, 8), seed=1, policy=rule).weight
    b = initialize(nn.Linear(8, 8), seed=1, policy=rule).weight
    assert torch.equal(a, b)


def test_initializer_statistics():
    w = initialize(nn.Linear(512, 256), seed=0, policy=[{"init": "trunc_normal", "modules": ["Linear"],
                                                          "args": {"std": 0.02}}]).weight
    assert abs(w.std().item() - 0.02) < 0.003 and w.abs().max() <= 0.04
    q = initialize(nn.Linear(64, 64), seed=0, policy=[{"init": "orthogonal", "modules": ["Linear"]}]).weight
    torch.testing.assert_close(q @ q.T, torch.eye(64), atol=1e-5, rtol=0)
    k = initialize(nn.Linear(1000, 400), seed=0, policy=[{"init": "kaiming_normal", "modules": ["Linear"]}]).weight
    assert abs(k.std().item() - (2 / 1000) ** 0.5) < 0.002


def test_presets_and_bad_policies():
    assert {"default", "transformer", "kaiming"} <= set(na.init.POLICIES)
    m = initialize(nn.Sequential(nn.Linear(4, 4), nn.Conv2d(2, 2, 3)), seed=0, policy="transformer")
    assert torch.count_nonzero(m[0].bias) == 0
    with pytest.raises(SpecError, match="unknown init policy 'transfomer'.*did you mean 'transformer'"):
        get_policy("transfomer")
    with pytest.raises(SpecError, match=r"init\[0\].init: unknown initialiser 'kaiming'"):
        InitPolicy.from_config([{"init": "kaiming"}])
    with pytest.raises(SpecError, match=r"init\[0\]: unknown key"):
        InitPolicy.from_config([{"init": "zeros", "mode": 1}])
    with pytest.raises(SpecError, match=r"init\[0\]: missing 'init'"):
        InitPolicy.from_config([{"modules": ["Linear"]}])
    with pytest.raises(SpecError, match=r"kaiming_normal cannot initialise 0.bias of shape \(4,\)"):
        initialize(nn.Sequential(nn.Linear(4, 4)), seed=0,
                   policy=[{"init": "kaiming_normal", "params": ["bias"]}])
    with pytest.raises(SpecError):
        InitRule("nope")


def test_module_without_reset_parameters_is_reported():
    class Raw(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(3, device="meta"))

    with pytest.raises(NetArchitectError, match="no reset_parameters"):
        materialize(Raw(), "cpu", seed=0)


def test_spec_init_rules_apply(repo_root):
    model = na.build(repo_root / "examples/specs/highway_mlp.yaml", seed=0)
    assert torch.all(model.nodes["t1"].bias == -1.0) and torch.all(model.nodes["t2"].bias == -1.0)
    assert not torch.all(model.nodes["h1"].bias == -1.0)


def test_seed_none_follows_global_generator():
    torch.manual_seed(5)
    a = initialize(nn.Linear(3, 3)).weight.clone()
    torch.manual_seed(5)
    assert torch.equal(a, initialize(nn.Linear(3, 3)).weight)


def _starts_as_identity(block: nn.Module, x: torch.Tensor, expected: torch.Tensor) -> None:
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_resnet_zero_init_policy_on_real_blocks():
    from netarchitect.layers import BasicBlock, Bottleneck, ConvNeXtBlock, InvertedResidual

    x = torch.randn(2, 8, 6, 6)
    for block in (BasicBlock(8, 8), Bottleneck(8, 8, expansion=2)):
        initialize(block, seed=0, policy="resnet_zero_init")
        assert torch.count_nonzero(getattr(block, block.last_norm).weight) == 0
        _starts_as_identity(block, x, torch.relu(x))
    mb = initialize(InvertedResidual(8, 8, expand_ratio=2), seed=0, policy="resnet_zero_init")
    _starts_as_identity(mb, x, x)
    cn = initialize(ConvNeXtBlock(8, kernel_size=3), seed=0, policy=[{"init": "zero_last_in_residual"}])
    _starts_as_identity(cn, x, x)
    # no skip (stride 2): nothing to zero, the block keeps its output
    down = initialize(InvertedResidual(8, 8, stride=2), seed=0, policy="resnet_zero_init")
    assert torch.count_nonzero(down.conv_pwl.norm.weight) == 8


def test_zero_init_flag_matches_policy():
    from netarchitect.layers import Bottleneck

    flagged = Bottleneck(8, 8, expansion=2, zero_init_last=True)
    assert torch.count_nonzero(flagged.bn3.weight) == 0
    flagged.reset_parameters()
    assert torch.count_nonzero(flagged.bn3.weight) == 0
    assert torch.count_nonzero(Bottleneck(8, 8, expansion=2).bn3.weight) == 8


def test_zero_init_residual_transformer_branches():
    from netarchitect.layers import Residual, TransformerBlock
    from netarchitect.layers.mlp import MLP

    block = initialize(TransformerBlock(16, 2), seed=0, policy=[{"init": "zero_last_in_residual"}])
    x = torch.randn(2, 5, 16)
    _starts_as_identity(block, x, x)
    res = Residual(MLP(16, hidden_dim=32), dim=16)
    res.zero_init_last()
    assert torch.count_nonzero(res.fn.fc2.weight) == 0 and torch.count_nonzero(res.fn.fc1.weight) > 0
    with pytest.raises(TypeError, match="no linear or conv"):
        Residual(nn.GELU(), norm=None).zero_init_last()
