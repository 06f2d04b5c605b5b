"""check_module: selection, skips, reports and the fast checks on modules that are correct."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from netarchitect.registry import Example
from netarchitect.testing import (
    ConformanceReport,
    assert_conformance,
    available_checks,
    check_module,
)


def make_inputs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


FAST = [
    "output_shape",
    "finite",
    "batch_independence",
    "determinism",
    "repr",
    "train_eval",
    "gradients",
    "grad_checkpointing",
    "float64",
    "meta",
    "bf16_autocast",
    "state_dict_roundtrip",
]


def test_available_checks_lists_fast_then_opt_in():
    assert available_checks() == FAST + ["gradcheck", "compile"]
    assert available_checks(include_opt_in=False) == FAST


def test_correct_module_passes_every_fast_check(mlp_factory, x):
    report = check_module(mlp_factory, x)
    assert isinstance(report, ConformanceReport)
    assert [r.name for r in report.results] == FAST
    assert report.failed == []
    assert report.skipped == ["grad_checkpointing"]
    assert "set_grad_checkpointing" in report["grad_checkpointing"].reason
    assert len(report.passed) == len(FAST) - 1


def test_checkpointing_module_passes(checkpointed_cls, x):
    report = check_module(functools.partial(checkpointed_cls, 4, 3), x)
    assert report.failed == [] and report.skipped == []


def test_instance_skips_checks_that_need_a_factory(tiny_mlp_cls, x):
    module = tiny_mlp_cls()
    report = check_module(module, x)
    assert report.skipped == ["grad_checkpointing", "meta", "state_dict_roundtrip"]
    assert "factory" in report["meta"].reason
    assert module.training  # the caller's module is left alone


def test_caller_skip_and_subset(mlp_factory, x):
    report = check_module(mlp_factory, x, checks=["finite", "repr"], skip={"repr": "not today"})
    assert [r.name for r in report.results] == ["finite", "repr"]
    assert report["repr"].status == "skipped" and report["repr"].reason == "not today"
    assert check_module(mlp_factory, x, checks="finite").passed == ["finite"]


def test_unknown_check_names_raise(mlp_factory, x):
    with pytest.raises(ValueError, match="unknown conformance check.*'finit'.*output_shape"):
        check_module(mlp_factory, x, checks=["finit"])
    with pytest.raises(ValueError, match="'nope'"):
        check_module(mlp_factory, x, skip={"nope": "why"})


def test_bad_module_argument():
    with pytest.raises(TypeError, match="nn.Module or a factory"):
        check_module(42, torch.zeros(1))
    with pytest.raises(TypeError, match="returned int"):
        check_module(lambda **kw: 3, torch.zeros(1), checks=["repr"])


class DictOut(nn.Module):
    def __init__(self, *, device=None, dtype=None) -> None:
        super().__init__()
        self.a = nn.Linear(4, 2, device=device, dtype=dtype)
        self.b = nn.Linear(4, 3, device=device, dtype=dtype)

    def forward(self, x, scale: float = 1.0, mask=None):
        return {"a": self.a(x) * scale, "pair": (self.b(x), x.argmax(-1)), "none": None}


class Silent(nn.Module):
    def forward(self, x):
        return torch.relu(x)


def test_dict_tuple_outputs_and_non_tensor_inputs(x):
    report = check_module(DictOut, (x, 2.0, None))
    assert report.failed == []


def test_integer_inputs_and_no_parameters():
    ids = torch.tensor([[1, 2, 3], [0, 4, 4]])
    emb = functools.partial(nn.Embedding, 5, 3)
    assert check_module(emb, ids).failed == []
    report = check_module(Silent(), make_inputs(3, 2))
    assert "no trainable parameters" in report["gradients"].reason


def test_batch_independence_skips():
    one = check_module(Silent, make_inputs(1, 3), checks=["batch_independence"])
    assert "batch size 1" in one["batch_independence"].reason
    mixed = check_module(
        lambda **kw: nn.Bilinear(2, 3, 1, **kw),
        (make_inputs(2, 2), make_inputs(3, 3)),
        checks=["batch_independence"],
        raise_on_failure=False,
    )
    assert "do not share a batch" in mixed["batch_independence"].reason
    scalar = check_module(Silent, torch.tensor(1.0), checks=["batch_independence"])
    assert "do not share a batch" in scalar["batch_independence"].reason


def test_report_text_and_raise_for_failures(mlp_factory, x):
    report = check_module(mlp_factory, x, checks=["finite", "grad_checkpointing"])
    text = str(report)
    assert "TinyMLP" in text and "finite" in text and "passed" in text and "skipped" in text
    assert "1 passed" in repr(report)
    report.raise_for_failures()  # nothing failed: no error
    assert list(report) == report.results and len(report) == 2
    with pytest.raises(KeyError, match="gradients"):
        report["gradients"]


def test_assert_conformance_accepts_registry_example(tiny_mlp_cls):
    example = Example(
        kwargs={"in_features": 2, "out_features": 5},
        inputs=(make_inputs(3, 2),),
        skip={"bf16_autocast": "slow"},
    )
    report = assert_conformance(tiny_mlp_cls, example, checks=["output_shape", "bf16_autocast"])
    assert report.passed == ["output_shape"] and report.skipped == ["bf16_autocast"]
    assert assert_conformance(tiny_mlp_cls(), make_inputs(2, 4), checks=["finite"]).passed


def test_gradcheck_on_tiny_module(x):
    report = check_module(functools.partial(nn.Linear, 4, 2), x[:2], checks=["gradcheck"])
    assert report.passed == ["gradcheck"]
    assert (
        "no floating"
        in check_module(Silent, torch.tensor([1, 2]), checks=["gradcheck"])["gradcheck"].reason
    )


@pytest.mark.slow
def test_compile_check_on_tiny_linear(x):
    report = check_module(functools.partial(nn.Linear, 4, 2), x, slow=True)
    assert report.failed == []
    assert report.passed[-2:] == ["gradcheck", "compile"]
