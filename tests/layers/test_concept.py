"""Concept-bottleneck head: shapes, modes, losses by hand, intervention, training on digits."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.interpret.concepts import (
    DIGIT_CONCEPT_NAMES,
    DIGIT_CONCEPTS,
    concept_accuracy,
    concept_predictions,
    find_concept_head,
    intervention,
    intervention_curve,
)
from netarchitect.interpret.specs import concept_bottleneck_spec
from netarchitect.layers.concept import ConceptBottleneckHead
from netarchitect.losses import auxiliary_loss
from netarchitect.search.tasks import get_task
from netarchitect.search.trainer import TrainConfig

TABLE = [[0, 1], [1, 0], [1, 1]]


def _head(**kw) -> ConceptBottleneckHead:
    torch.manual_seed(0)
    return ConceptBottleneckHead(5, 3, num_concepts=2, class_concepts=TABLE, **kw)


def test_digit_concepts_identify_the_digit() -> None:
    assert len(DIGIT_CONCEPTS) == 10 and len(DIGIT_CONCEPT_NAMES) == 6
    assert len(set(DIGIT_CONCEPTS)) == 10  # true concepts determine the label
    assert DIGIT_CONCEPTS[8] == (1, 1, 1, 0, 0, 0) and DIGIT_CONCEPTS[7] == (0, 1, 0, 1, 1, 0)


def test_forward_and_intervention_by_hand() -> None:
    head = _head().eval()
    x = torch.randn(4, 5)
    c = head.concept_logits(x)
    torch.testing.assert_close(head(x), head.label(torch.sigmoid(c)))
    true = torch.tensor([[1.0, 0.0]] * 4)
    torch.testing.assert_close(head(x, true), head.label(true))
    mask = torch.tensor([True, False])
    mixed = torch.stack([true[:, 0], torch.sigmoid(c)[:, 1]], -1)
    torch.testing.assert_close(head(x, true, mask), head.label(mixed))
    with pytest.raises(ValueError, match="concepts: shape"):
        head(x, true[:, :1])


@pytest.mark.parametrize("mode", ["joint", "sequential", "independent"])
def test_auxiliary_loss_by_mode(mode: str) -> None:
    head = _head(mode=mode, concept_weight=0.5, hidden_features=4).train()
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    out = head(x)
    true = torch.tensor(TABLE, dtype=torch.float32)[y]
    expected = 0.5 * F.binary_cross_entropy_with_logits(head.concept_logits(x), true)
    if mode == "independent":
        expected = expected + F.cross_entropy(head.label(true), y)
        assert not out.requires_grad  # f learns from the true concepts only
    torch.testing.assert_close(head.auxiliary_loss(y), expected)
    if mode == "sequential":  # the label loss does not reach the concept predictor
        F.cross_entropy(out, y).backward()
        assert head.concept.weight.grad is None
    if mode == "joint":
        F.cross_entropy(out, y).backward()
        assert head.concept.weight.grad is not None
    copy.deepcopy(head)  # recorded tensors do not block copies


def test_errors() -> None:
    with pytest.raises(SpecError, match="mode"):
        ConceptBottleneckHead(4, 2, num_concepts=2, mode="greedy")
    with pytest.raises(SpecError, match="class_concepts"):
        ConceptBottleneckHead(4, 2, num_concepts=2, class_concepts=[[0, 2], [1, 1]])
    with pytest.raises(SpecError, match="class_concepts"):
        ConceptBottleneckHead(4, 2, num_concepts=2, class_concepts=[[0, 1]])
    plain = ConceptBottleneckHead(4, 2, num_concepts=2)
    with pytest.raises(RuntimeError, match="class_concepts"):
        plain.auxiliary_loss(torch.tensor([0]))
    with pytest.raises(RuntimeError, match="no training forward"):
        _head().auxiliary_loss(torch.tensor([0]))
    with pytest.raises(NetArchitectError, match="0 concept_bottleneck_head"):
        find_concept_head(torch.nn.Linear(2, 2))
    assert "mode=joint" in repr(plain)


def test_meta_build_keeps_table() -> None:
    spec = concept_bottleneck_spec((1, 8, 8), 10, DIGIT_CONCEPTS, hidden=8)
    model = na.build(spec, seed=0)
    head = find_concept_head(model)
    torch.testing.assert_close(head.class_concepts, torch.tensor(DIGIT_CONCEPTS, dtype=torch.float32))
    assert auxiliary_loss(torch.nn.Linear(2, 2), torch.tensor([0])).item() == 0


@pytest.mark.parametrize("mode", ["joint", "sequential", "independent"])
def test_trains_on_digits_and_intervention_helps(mode: str) -> None:
    torch.manual_seed(0)
    task = get_task("digits")
    spec = concept_bottleneck_spec((1, 8, 8), 10, DIGIT_CONCEPTS, hidden=32, mode=mode,
                                   hidden_features=32)
    model = na.build(spec, seed=0)
    result = task.fit(model, TrainConfig(epochs=10, lr=1e-2, seed=0))
    assert result.val_acc > 0.85
    true = torch.tensor(DIGIT_CONCEPTS, dtype=torch.float32)[task.y_test]
    acc = concept_accuracy(model, task.x_test, true)
    assert acc.shape == (6,) and acc.min() > 0.85, acc
    probs, logits = concept_predictions(model, task.x_test[:3])
    assert probs.shape == (3, 6) and logits.shape == (3, 10)
    curve = intervention_curve(model, task.x_test, true, task.y_test)
    assert len(curve) == 7
    assert curve[-1] > curve[0] and curve[-1] > 0.98, curve
    with intervention(model, true[:5]):
        assert model.eval()(task.x_test[:5]).argmax(-1).tolist() == task.y_test[:5].tolist()


def test_example_runs() -> None:
    ex = ConceptBottleneckHead.example()
    assert ConceptBottleneckHead(**ex.kwargs)(*ex.inputs).shape == (3, 3)


def test_reset_classifier_puts_it_on_any_backbone() -> None:
    """A HEADS entry: reset_classifier puts a concept bottleneck on any backbone."""
    from netarchitect.layers import heads

    assert "concept_bottleneck_head" in heads.HEADS
    model = na.create_model("resnet18", num_classes=10, widths=(4, 8), layers=(1, 1),
                            stem_width=8, img_size=32, seed=0)
    table = [list(r) for r in DIGIT_CONCEPTS]
    model.reset_classifier(10, head="concept_bottleneck_head",
                           head_args={"num_concepts": 6, "class_concepts": table}, seed=0)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    torch.testing.assert_close(find_concept_head(model).class_concepts,
                               torch.tensor(DIGIT_CONCEPTS, dtype=torch.float32))
    rebuilt = na.build(model.spec, seed=0).eval()
    torch.testing.assert_close(rebuilt(torch.ones(1, 3, 32, 32)), model(torch.ones(1, 3, 32, 32)))
