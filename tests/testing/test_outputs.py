"""Flattening module outputs and comparing them."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import torch

from netarchitect.testing import flatten_tensors
from netarchitect.testing._outputs import compare_outputs, named_tensors, projection_loss


@dataclass
class Out:
    logits: torch.Tensor
    aux: object = None


Pair = namedtuple("Pair", ["a", "b"])


def test_flatten_tensor_tuple_dict_dataclass_namedtuple():
    t = torch.zeros(2)
    assert flatten_tensors(t)[0] is t
    nested = (t, [t + 1, {"k": t + 2, "none": None}], Out(t + 3), Pair(t + 4, 7), "text")
    values = [int(x[0]) for x in flatten_tensors(nested)]
    assert values == [0, 1, 2, 3, 4]


def test_named_tensors_paths():
    t = torch.zeros(1)
    names = [n for n, _ in named_tensors({"x": (t, Pair(t, t)), "y": Out(t)})]
    assert names == [
        "output['x'][0]",
        "output['x'][1].a",
        "output['x'][1].b",
        "output['y'].logits",
    ]


def test_compare_outputs_reasons():
    a = [("output", torch.tensor([1.0, 2.0, float("nan")]))]
    assert compare_outputs(a, a, atol=0, rtol=0) is None
    b = [("output", torch.tensor([1.0, 2.5, float("nan")]))]
    reason = compare_outputs(a, b, atol=1e-5, rtol=0)
    assert "output" in reason and "max abs diff 0.5" in reason and "index (1,)" in reason
    assert compare_outputs(a, b, atol=1.0, rtol=0) is None
    assert compare_outputs(a, b, atol=0.3, rtol=0, scaled=True) is None  # 0.3 * scale 2
    nan_moved = [("output", torch.tensor([float("nan"), 2.0, 3.0]))]
    assert "NaN" in compare_outputs(a, nan_moved, atol=1, rtol=0)
    assert "2 output tensors" in compare_outputs(a, a + a, atol=0, rtol=0)
    assert "shape" in compare_outputs(a, [("output", torch.zeros(2))], atol=0, rtol=0)


def test_compare_outputs_integers_and_inf():
    i = [("ids", torch.tensor([1, 2]))]
    j = [("ids", torch.tensor([1, 3]))]
    assert "differ" in compare_outputs(i, j, atol=10, rtol=0)
    assert compare_outputs(i, j, atol=0, rtol=0, floating_only=True) is None
    inf = [("o", torch.tensor([float("inf"), 1.0]))]
    assert compare_outputs(inf, inf, atol=0, rtol=0) is None


def test_projection_loss_is_seeded_and_skips_integers():
    t = torch.ones(3, requires_grad=True)
    ids = torch.tensor([1, 2])
    a = projection_loss([t, ids], seed=0)
    assert torch.equal(a, projection_loss([t, ids], seed=0))
    assert not torch.equal(a, projection_loss([t], seed=1))
    a.backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
