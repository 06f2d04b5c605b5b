"""Fuzzing ``fuse`` and ``prune`` over the spec fuzzer's working specs (one node around every
registered block's examples, the example specs, and mutations of them that build): each
either gives a model that runs and equals (fusion) or rebuilds from its new spec (pruning),
or raises a NetArchitectError — never another exception, and the input is never changed."""

from __future__ import annotations

import random

import pytest
import torch

from netarchitect.errors import NetArchitectError
from netarchitect.network import build, sample_inputs
from netarchitect.optimize import fuse, prune
from netarchitect.spec import load_spec
from netarchitect.testing.fuzz import mutate, seed_specs


def _specs() -> list[dict]:
    seeds = seed_specs()
    rng = random.Random(0)
    mutated = [mutate(s, rng) for s in rng.sample(seeds, 60)]
    return seeds + mutated


def _model(spec: dict):
    try:
        model = build(load_spec(spec), seed=0)
        x = sample_inputs(model.spec, batch=2, int_high=1)
        with torch.no_grad():
            model.eval()(*x)
    except NetArchitectError:
        return None, None
    return model, x


def _first(out):
    while not isinstance(out, torch.Tensor):
        out = out[0] if isinstance(out, (tuple, list)) else next(iter(vars(out).values()))
    return out


@pytest.mark.slow
def test_fuse_and_prune_never_crash_and_never_touch_their_input() -> None:
    outcomes = {"fused": 0, "pruned": 0, "refused": 0}
    for spec in _specs():
        model, x = _model(spec)
        if model is None:
            continue
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            want = _first(model(*x))
            got = _first(fuse(model)(*x))
        if want.is_floating_point():
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=spec.get("name"))
        outcomes["fused"] += 1
        try:
            result = prune(model, 0.5)
        except NetArchitectError:
            outcomes["refused"] += 1
        else:
            rebuilt = build(result.spec, seed=1)
            assert sum(p.numel() for p in rebuilt.parameters()) == sum(
                p.numel() for p in result.model.parameters()
            ), spec.get("name")
            with torch.no_grad():
                result.model.eval()(*x)
            outcomes["pruned"] += 1
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), (spec.get("name"), k)
    assert outcomes["fused"] > 100 and outcomes["pruned"] >= 5, outcomes
