import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.mlp import MLP
from netarchitect.layers.moe import MoEFeedForward, moe_aux_loss


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _moe(**kw):
    torch.manual_seed(0)
    args = {"num_experts": 4, "top_k": 2, "hidden_dim": 6, **kw}
    return MoEFeedForward(8, **args).eval()


def _reference(moe, x):
    """Loop-by-loop GShard routing: first choices of all tokens, then second choices."""
    tokens = x.reshape(-1, 8)
    probs = (tokens @ moe.router.weight.T).softmax(-1)
    gates, experts = probs.topk(moe.top_k, -1)
    if moe.normalize_gates and moe.top_k > 1:
        gates = gates / gates.sum(-1, keepdim=True)
    cap = moe.capacity(tokens.shape[0])
    used = [0] * moe.num_experts
    out = torch.zeros_like(tokens)
    dropped = 0
    for j in range(moe.top_k):
        for t in range(tokens.shape[0]):
            e = int(experts[t, j])
            if cap is not None and used[e] >= cap:
                dropped += 1
                continue
            used[e] += 1
            out[t] += gates[t, j] * moe.experts[e](tokens[t : t + 1])[0]
    return out.view(x.shape), dropped, used, probs, experts


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.25, None])
@pytest.mark.parametrize("top_k", [1, 2])
def test_routing_respects_capacity(capacity_factor, top_k):
    moe = _moe(capacity_factor=capacity_factor, top_k=top_k)
    x = _x(3, 7, 8)
    calls = [0] * moe.num_experts

    def counter(e):
        def hook(module, args, output):
            calls[e] += args[0].shape[0]

        return hook

    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(counter(e))
    out = moe(x)
    seen = list(calls)  # the reference below calls the experts too
    expected, dropped, used, _, _ = _reference(moe, x)
    cap = moe.capacity(21)
    if capacity_factor is not None:
        assert cap == math.ceil(capacity_factor * 21 * top_k / 4)
        assert all(c <= cap for c in seen)
    assert seen == used
    assert int(moe.dropped_tokens) == dropped
    assert_close(out, expected)
    if capacity_factor == 0.5:
        assert dropped > 0


def test_aux_loss_equals_formula():
    moe = _moe(aux_loss_weight=0.1, capacity_factor=0.5)
    x = _x(2, 9, 8)
    moe(x)
    _, _, _, probs, experts = _reference(moe, x)
    N, k, E = 18, 2, 4
    f = torch.tensor([(experts == e).sum().item() / (N * k) for e in range(E)])
    P = probs.mean(0)
    assert_close(moe.aux_loss, 0.1 * E * (f * P).sum())
    # the aux loss trains the router
    moe.train()
    moe(x)
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_single_expert_top1_equals_mlp():
    moe = MoEFeedForward(8, num_experts=1, top_k=1, hidden_dim=12, act_layer="relu").eval()
    mlp = MLP(8, hidden_dim=12, act_layer="relu").eval()
    mlp.load_state_dict(moe.experts[0].state_dict())
    x = _x(2, 5, 8)
    assert_close(moe(x), mlp(x))
    assert int(moe.dropped_tokens) == 0
    assert_close(moe.aux_loss, torch.tensor(0.01))  # E · f · P = 1 · 1 · 1, times the weight


def test_raw_gates_swiglu_experts_and_gradients():
    moe = _moe(normalize_gates=False, expert_layer="swiglu", capacity_factor=None).train()
    x = _x(2, 6, 8)
    expected, *_ = _reference(moe, x)
    out = moe(x)
    assert_close(out, expected)
    (out.sum() + moe.aux_loss).backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None, name


def test_jitter_and_noise_only_in_training():
    moe = _moe(router_jitter=0.3, router_noise=1.0, capacity_factor=None)
    x = _x(2, 6, 8)
    assert_close(moe(x), moe(x))
    moe.train()
    torch.manual_seed(1)
    a = moe(x)
    assert not torch.equal(a, moe.eval()(x))


def test_moe_aux_loss_collects_layers():
    model = nn.Sequential(_moe(), nn.Linear(8, 8), _moe(aux_loss_weight=1.0))
    model(_x(2, 3, 8))
    assert_close(moe_aux_loss(model), model[0].aux_loss + model[2].aux_loss)
    assert moe_aux_loss(nn.Linear(2, 2)).item() == 0.0


def test_meta_and_repr():
    moe = MoEFeedForward(8, num_experts=3, top_k=1, device="meta", dtype=torch.float64)
    assert all(p.is_meta and p.dtype == torch.float64 for p in moe.parameters())
    assert "num_experts=3, top_k=1" in repr(moe)
    assert moe.capacity(10) == math.ceil(1.25 * 10 / 3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"num_experts": 0}, "num_experts"),
        ({"top_k": 5}, "top_k=5 exceeds num_experts=4"),
        ({"top_k": 0}, "top_k"),
        ({"capacity_factor": 0.0}, "capacity_factor"),
        ({"aux_loss_weight": -1.0}, "aux_loss_weight"),
        ({"router_jitter": 1.0}, "router_jitter"),
        ({"router_noise": -0.1}, "router_noise"),
    ],
)
def test_bad_arguments(kw, match):
    args = {"num_experts": 4, **kw}
    with pytest.raises(SpecError, match=match):
        MoEFeedForward(8, **args)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(\*, 8\)"):
        _moe()(_x(2, 3, 7))


def test_meta_forward_gives_shapes():
    moe = MoEFeedForward(8, num_experts=2, device="meta")
    out = moe(torch.empty(2, 3, 8, device="meta"))
    assert out.shape == (2, 3, 8) and out.is_meta and int(moe.dropped_tokens.numel()) == 1


def test_copies_after_a_forward_keep_the_loss_value_not_its_graph() -> None:
    import copy
    import pickle

    moe = MoEFeedForward(8, num_experts=4, top_k=2, hidden_dim=8)
    moe(torch.randn(2, 5, 8)).sum()
    assert moe.aux_loss.requires_grad
    for clone in (copy.deepcopy(moe), pickle.loads(pickle.dumps(moe))):
        torch.testing.assert_close(clone.aux_loss, moe.aux_loss.detach())
        assert not clone.aux_loss.requires_grad
