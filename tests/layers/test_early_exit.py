import functools

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.early_exit import EarlyExit


def _model(threshold=0.6, policy="sample", num=3, seed=0):
    torch.manual_seed(seed)
    stages = [nn.Sequential(nn.Linear(6, 6), nn.Tanh()) for _ in range(num)]
    heads = [nn.Linear(6, 3) for _ in range(num)]
    with torch.no_grad():
        for h in heads:
            h.weight.mul_(4)
    return EarlyExit(stages, heads, threshold=threshold, policy=policy).eval()


def _count_calls(model):
    calls = [0] * len(model.stages)

    def hook(i):
        def fn(module, args, output):
            calls[i] += 1

        return fn

    for i, stage in enumerate(model.stages):
        stage.register_forward_hook(hook(i))
    return calls


def _all_exits(model, x):
    model.train()
    outs = model(x)
    model.eval()
    return outs


def _first_confident(model, outs):
    conf = torch.stack([o.softmax(-1).amax(-1) for o in outs])  # (E, B)
    ok = conf >= model.threshold
    ok[-1] = True
    return ok.float().argmax(0) + 1  # 1-based exit per sample


def test_training_returns_every_exit():
    model = _model().train()
    calls = _count_calls(model)
    outs = model(torch.randn(4, 6))
    assert isinstance(outs, list) and len(outs) == 3 and outs[0].shape == (4, 3)
    assert calls == [1, 1, 1] and model.last_depth == 3
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.7, 0.9, 1.0])
def test_sample_policy_depth_and_outputs(threshold):
    model = _model(threshold)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    outs = _all_exits(model, x)
    expected_depth = _first_confident(model, outs)
    calls = _count_calls(model)
    out = model(x)
    assert torch.equal(model.exit_depths, expected_depth)
    assert model.last_depth == int(expected_depth.max())
    assert sum(c > 0 for c in calls) == model.last_depth  # stages executed = reported depth
    expected = torch.stack([outs[int(d) - 1][i] for i, d in enumerate(expected_depth)])
    assert_close(out, expected)
    if threshold == 0.0:
        assert model.last_depth == 1
    if threshold == 1.0:
        assert model.last_depth == 3


def test_sample_policy_shrinks_the_batch():
    model = _model(0.7)
    sizes = []
    for stage in model.stages:
        stage.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    model(x)
    depths = model.exit_depths
    assert sizes == [int((depths >= d).sum()) for d in range(1, model.last_depth + 1)]


@pytest.mark.parametrize("threshold", [0.0, 0.6, 1.0])
def test_batch_policy_stops_when_all_confident(threshold):
    model = _model(threshold, policy="batch")
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(2))
    outs = _all_exits(model, x)
    depth = int(_first_confident(model, outs).max())
    calls = _count_calls(model)
    out = model(x)
    assert model.last_depth == depth == sum(calls)
    assert torch.equal(model.exit_depths, torch.full((8,), depth))
    assert_close(out, outs[depth - 1])


def test_factories_device_dtype_and_meta():
    stage = functools.partial(nn.Linear, 4, 4)
    head = functools.partial(nn.Linear, 4, 2)
    model = EarlyExit([stage, stage], [head, head], dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    meta = EarlyExit([stage], [head], device="meta").eval()
    assert meta(torch.randn(3, 4, device="meta")).shape == (3, 2)
    moved = EarlyExit([nn.Linear(4, 4)], [nn.Linear(4, 2)], dtype=torch.float64)
    assert moved.heads[0].weight.dtype == torch.float64
    before = model.heads[0].weight.clone()
    model.reset_parameters()
    assert not torch.equal(before, model.heads[0].weight)
    assert "num_stages=2" in repr(model)


def test_bad_arguments():
    lin = nn.Linear(4, 4)
    with pytest.raises(SpecError, match="one head per stage"):
        EarlyExit([lin], [])
    with pytest.raises(SpecError, match="one head per stage"):
        EarlyExit([], [])
    with pytest.raises(SpecError, match="threshold"):
        EarlyExit([lin], [lin], threshold=1.5)
    with pytest.raises(ValueError, match="policy"):
        EarlyExit([lin], [lin], policy="token")
    with pytest.raises(TypeError, match="modules or factories"):
        EarlyExit([lin], [3])
