"""Auxiliary losses through the search's fit_loop, the interpretable specs, the example script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import netarchitect as na
from netarchitect.interpret.specs import concept_bottleneck_spec, protopnet_spec
from netarchitect.losses import auxiliary_loss
from netarchitect.search.tasks import task_from_arrays
from netarchitect.search.trainer import TrainConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _Aux(nn.Module):
    """A module whose auxiliary loss is 10 × its weight: training must shrink the weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.fc(x) + 0 * self.w

    def auxiliary_loss(self, target):
        return 10 * self.w


def _task():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(90, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    return task_from_arrays("toy", x.numpy(), y.numpy())


def test_auxiliary_loss_sums_submodules() -> None:
    model = nn.Sequential(_Aux(), nn.Identity(), _Aux())
    assert auxiliary_loss(model, torch.tensor([0])).item() == 20


def test_every_task_fit_adds_the_term() -> None:
    task = _task()
    model = nn.Sequential(_Aux())
    cfg = TrainConfig(epochs=2, lr=0.1, seed=0)
    result = task.fit(model, cfg)
    assert result.epochs_run == 2 and model[0].w.item() < 0.9
    plain = nn.Sequential(_Aux())
    task.fit(plain, cfg)
    torch.testing.assert_close(plain[0].w.detach(), model[0].w.detach())  # deterministic


def test_specs_build() -> None:
    proto = na.build(protopnet_spec((1, 8, 8), 3, widths=(4,), prototype_dim=4), seed=0)
    assert proto(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    cbm = na.build(concept_bottleneck_spec((5,), 2, [[0, 1], [1, 1]], hidden=4), seed=0)
    assert cbm(torch.randn(2, 5)).shape == (2, 2)


@pytest.mark.slow
def test_prototypes_example_quick(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("example_prototypes", EXAMPLES / "prototypes_digits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    png = tmp_path / "p.png"
    result = module.main(["--quick", "--out", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert 0.3 < result.refitted <= 1.0
    out = capsys.readouterr().out
    assert "after projection" in out and "wrote" in out


def test_interpretability_sections(tmp_path) -> None:
    from netarchitect.interpret.concepts import DIGIT_CONCEPT_NAMES, DIGIT_CONCEPTS
    from netarchitect.interpret.prototypes import find_prototype_head
    from netarchitect.interpret.report import interpretability_section
    from netarchitect.search.tasks import get_task

    task = get_task("digits")
    proto = na.build(protopnet_spec((1, 8, 8), 10, widths=(4, 8), prototypes_per_class=1,
                                    prototype_dim=4), seed=0)
    before = find_prototype_head(proto).prototypes.detach().clone()
    text = interpretability_section(proto, task, tmp_path)
    assert "![prototypes](prototypes.png)" in text
    assert (tmp_path / "prototypes.png").read_bytes()[:4] == b"\x89PNG"
    torch.testing.assert_close(find_prototype_head(proto).prototypes, before)  # unchanged
    cbm = na.build(concept_bottleneck_spec((1, 8, 8), 10, DIGIT_CONCEPTS, hidden=8), seed=0)
    wrapped = type("T", (), {"x_test": task.x_test, "y_test": task.y_test,
                             "concept_names": DIGIT_CONCEPT_NAMES})()
    text = interpretability_section(cbm, wrapped, tmp_path)
    assert "| even |" in text and text.count("\n|") == 9
    assert interpretability_section(nn.Linear(2, 2), task, tmp_path) is None
