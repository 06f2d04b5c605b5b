"""Ensembles: averaging/voting, stacking, and the vectorised ensemble equal to a loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import netarchitect as na
from netarchitect.errors import NetArchitectError, ShapeError, SpecError
from netarchitect.extend.ensemble import (
    Ensemble,
    VectorizedEnsemble,
    combine_outputs,
    fit_stacking,
)


def _mlp(seed: int, act: type[nn.Module] = nn.GELU) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), act(), nn.Dropout(0.0),
                         nn.Linear(16, 16), act(), nn.Linear(16, 5))


def _grads(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


def test_combine_outputs_reference_values() -> None:
    out = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[3.0, 0.0, 0.0]]])  # (N=3, B=1, C=3)
    assert_close(combine_outputs(out, "logits"), out.mean(0))
    probs = F.softmax(out, -1).mean(0)
    assert_close(combine_outputs(out, "prob").exp(), probs)
    assert_close(combine_outputs(out, "vote"), torch.tensor([[2 / 3, 1 / 3, 0.0]]))
    with pytest.raises(NetArchitectError, match="unknown ensemble method 'median'"):
        combine_outputs(out, "median")


def test_ensemble_vote_breaks_ties_by_probability() -> None:
    class Fixed(nn.Module):
        def __init__(self, logits: list[float]) -> None:
            super().__init__()
            self.logits = torch.tensor([logits])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits.expand(len(x), -1)

    members = [Fixed([0.0, 1.0, 0.0]), Fixed([0.0, 0.0, 5.0])]  # one vote each for 1 and 2
    ens = Ensemble(members, method="vote")
    x = torch.zeros(2, 1)
    assert_close(ens(x), torch.tensor([[0.0, 0.5, 0.5]] * 2))
    assert ens.predict(x).tolist() == [2, 2]
    assert Ensemble(members, method="logits").predict(x).tolist() == [2, 2]


def test_ensemble_bad_inputs() -> None:
    with pytest.raises(NetArchitectError, match="at least one member"):
        Ensemble([])
    with pytest.raises(TypeError, match="not an nn.Module"):
        Ensemble([nn.Linear(2, 2), "model"])
    with pytest.raises(NetArchitectError, match="unknown ensemble method"):
        Ensemble([nn.Linear(2, 2)], method="mean")
    with pytest.raises(NetArchitectError, match="at least one member"):
        VectorizedEnsemble([])
    with pytest.raises(ShapeError, match=r"0.weight: members\[1\] differs from members\[0\] in shape"):
        VectorizedEnsemble([nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 2))])
    with pytest.raises(SpecError, match="impl='bmm' needs a chain"):
        VectorizedEnsemble([nn.Sequential(nn.Conv2d(1, 2, 3))], impl="bmm")
    with pytest.raises(NetArchitectError, match="impl='fast'"):
        VectorizedEnsemble([nn.Linear(2, 2)], impl="fast")
    with pytest.raises(ValueError, match="per_member=True"):
        VectorizedEnsemble([nn.Linear(2, 2)] * 2)(torch.randn(3, 4, 2), per_member=True)


@pytest.mark.parametrize("impl", ["bmm", "vmap"])
@pytest.mark.parametrize("per_member", [False, True])
def test_vectorized_equals_loop_outputs_and_gradients(impl: str, per_member: bool) -> None:
    members = [_mlp(s) for s in range(4)]
    ens = VectorizedEnsemble(members, impl=impl)
    assert ens.impl == impl
    x = torch.randn(4, 6, 3, 4) if per_member else torch.randn(6, 3, 4)
    y = torch.randint(0, 5, (4, 6))
    out = ens(x, per_member=per_member)
    loop = torch.stack([m(x[i] if per_member else x) for i, m in enumerate(members)])
    assert_close(out, loop, atol=1e-6, rtol=1e-5)
    F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum").backward()
    sum(F.cross_entropy(o, t, reduction="sum") for o, t in zip(loop, y)).backward()
    for name, stacked in ens.param_dict().items():
        ref = torch.stack([dict(m.named_parameters())[name].grad for m in members])
        assert_close(stacked.grad, ref, atol=1e-5, rtol=1e-5)


def test_vectorized_auto_choice_method_and_unstack() -> None:
    members = [_mlp(s) for s in range(3)]
    assert VectorizedEnsemble(members).impl == "bmm"
    convs = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten()) for _ in range(2)]
    ens = VectorizedEnsemble(convs).eval()
    assert ens.impl == "vmap"
    x = torch.randn(2, 1, 5, 5)
    assert_close(ens(x), torch.stack([m.eval()(x) for m in convs]))
    voting = VectorizedEnsemble(members, method="prob")
    assert_close(voting(torch.randn(2, 12)).exp().sum(-1), torch.ones(2))
    with torch.no_grad():
        voting.stacked_params[0].add_(1.0)
    back = voting.unstack()
    assert len(back) == 3 and isinstance(back[0], nn.Sequential)
    x = torch.randn(2, 12)
    assert_close(torch.stack([m(x) for m in back]), VectorizedEnsemble(back)(x))
    assert "impl='bmm'" in repr(voting)


def test_vectorized_spec_chain_and_linear_free_chain() -> None:
    spec = {"name": "mlp", "inputs": {"x": {"shape": [8]}},
            "nodes": [{"id": "fc1", "block": "linear", "params": {"out_features": 6},
                       "inputs": ["x"]},
                      {"id": "act", "block": "relu"},
                      {"id": "fc2", "block": "linear", "params": {"out_features": 3,
                                                                   "bias": False}}],
            "outputs": ["fc2"]}
    members = [na.build(spec, seed=s) for s in range(3)]
    ens = VectorizedEnsemble(members)
    assert ens.impl == "bmm"
    x = torch.randn(4, 8)
    xs = torch.randn(3, 4, 8)
    assert_close(ens(x), torch.stack([m(x) for m in members]))
    assert_close(ens(xs, per_member=True), torch.stack([m(v) for m, v in zip(members, xs)]))
    skip = {**spec, "nodes": [*spec["nodes"][:2], {"id": "res", "block": "identity",
                                                  "inputs": ["act", "fc1"], "merge": "add"}],
            "outputs": ["res"]}
    assert VectorizedEnsemble([na.build(skip, seed=0)] * 2).impl == "vmap"
    flat = VectorizedEnsemble([nn.Sequential(nn.Flatten(), nn.ReLU())] * 2)
    assert flat(torch.randn(3, 2, 2)).shape == (2, 3, 4)


def test_fit_stacking_improves_on_averaging() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes
    members = [nn.Sequential(nn.Linear(12, 3)) for _ in range(3)]
    with torch.no_grad():  # members good at different features, one useless
        members[0][0].weight.zero_()
        members[0][0].weight[:, 0] = torch.tensor([-3.0, 0.0, 3.0])
        members[1][0].weight.zero_()
        members[1][0].weight[:, 1] = torch.tensor([-3.0, 0.0, 3.0])
    stack = fit_stacking(members, x, y)
    before = F.cross_entropy(Ensemble(members, "prob")(x), y).item()
    after = F.cross_entropy(stack(x), y).item()
    assert after < before
    assert not any(p.requires_grad for p in stack.members.parameters())
    assert stack.combiner.weight.shape == (3, 9)
    with pytest.raises(NetArchitectError, match="same non-zero number"):
        fit_stacking(members, x, y[:10])
    assert math.isfinite(after)


def test_vectorized_two_output_spec_uses_vmap() -> None:
    spec = {"name": "two", "inputs": {"x": {"shape": [4]}},
            "nodes": [{"id": "fc1", "block": "linear", "params": {"out_features": 3},
                       "inputs": ["x"]},
                      {"id": "fc2", "block": "linear", "params": {"out_features": 2}}],
            "outputs": ["fc2", "fc1"]}
    members = [na.build(spec, seed=s) for s in range(2)]
    ens = VectorizedEnsemble(members)
    assert ens.impl == "vmap"
    out2, out1 = ens(torch.randn(5, 4))
    assert out2.shape == (2, 5, 2) and out1.shape == (2, 5, 3)
