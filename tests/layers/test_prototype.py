"""ProtoPNet head: formulas by hand, losses, projection onto real patches, explanations."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.interpret.prototypes import (
    explain_prototypes,
    find_prototype_head,
    finetune_last_layer,
    project_prototypes,
    prototype_loss,
    recording,
)
from netarchitect.interpret.specs import protopnet_spec
from netarchitect.layers.prototype import PrototypeHead, cluster_cost, separation_cost
from netarchitect.losses import auxiliary_loss
from netarchitect.search.tasks import get_task
from netarchitect.search.trainer import TrainConfig


def _head() -> PrototypeHead:
    torch.manual_seed(0)
    return PrototypeHead(4, 3, prototypes_per_class=2, prototype_dim=5)


def test_forward_by_hand() -> None:
    head = _head().eval()
    x = torch.randn(2, 4, 3, 3)
    with recording(head):
        logits = head(x)
        det = dict(head.details)
    z = head.add_on(x)
    d = ((z[:, None] - head.prototypes[None, :, :, None, None]) ** 2).sum(2)  # (B, P, H, W)
    torch.testing.assert_close(det["distances"], d, atol=1e-5, rtol=1e-5)
    min_d = d.flatten(2).min(-1).values
    sim = torch.log((min_d + 1) / (min_d + 1e-4))
    torch.testing.assert_close(logits, sim @ head.last_layer.weight.T, atol=1e-5, rtol=1e-5)
    assert head.details == {}  # cleared after recording
    assert logits.shape == (2, 3) and "prototypes=6" in repr(head)


def test_last_layer_identity_init() -> None:
    head = _head()
    assert head.prototype_class.tolist() == [0, 0, 1, 1, 2, 2]
    w = head.last_layer.weight
    assert w.shape == (3, 6)
    assert w[0, :2].eq(1).all() and w[0, 2:].eq(-0.5).all() and w[2, 4:].eq(1).all()


def test_costs_by_hand() -> None:
    min_d = torch.tensor([[1.0, 2.0, 0.5, 4.0], [3.0, 0.1, 2.0, 5.0]])
    owner = torch.tensor([0, 0, 1, 1])
    y = torch.tensor([0, 1])
    torch.testing.assert_close(cluster_cost(min_d, owner, y), torch.tensor((1.0 + 2.0) / 2))
    torch.testing.assert_close(separation_cost(min_d, owner, y), torch.tensor((0.5 + 0.1) / 2))


def test_auxiliary_loss_by_hand() -> None:
    head = _head().train()
    x, y = torch.randn(2, 4, 3, 3), torch.tensor([0, 2])
    head(x)
    min_d = head.details["min_distances"]
    off = head.last_layer.weight * (1 - head.class_identity.T)
    expected = (0.8 * cluster_cost(min_d, head.prototype_class, y)
                - 0.08 * separation_cost(min_d, head.prototype_class, y) + 1e-4 * off.abs().sum())
    torch.testing.assert_close(head.auxiliary_loss(y), expected)
    torch.testing.assert_close(prototype_loss(head, y), expected)
    torch.testing.assert_close(auxiliary_loss(torch.nn.Sequential(head), y), expected)
    copy.deepcopy(head)  # recorded tensors do not block copies
    head.auxiliary_loss(y).backward()
    assert head.prototypes.grad is not None


def test_errors() -> None:
    with pytest.raises(SpecError, match="epsilon"):
        PrototypeHead(4, 3, epsilon=0)
    with pytest.raises(SpecError, match="num_classes"):
        PrototypeHead(4, 0)
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        _head()(torch.randn(2, 4))
    with pytest.raises(RuntimeError, match="no forward"):
        _head().auxiliary_loss(torch.tensor([0]))
    with pytest.raises(NetArchitectError, match="no recorded forward"):
        prototype_loss(_head(), torch.tensor([0]))
    with pytest.raises(NetArchitectError, match="0 prototype_head"):
        find_prototype_head(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def trained():
    task = get_task("digits")
    torch.manual_seed(0)
    model = na.build(protopnet_spec((1, 8, 8), 10, widths=(8, 16), prototypes_per_class=1,
                                    prototype_dim=8), seed=0)
    result = task.fit(model, TrainConfig(epochs=4, lr=1e-2, seed=0))
    return task, model, result


def _loader(task, n: int = 400, batch: int = 128):
    return [(task.x_train[i : i + batch], task.y_train[i : i + batch]) for i in range(0, n, batch)]


def test_trains_with_fit_loop(trained) -> None:
    _, model, result = trained
    assert result.val_acc > 0.5  # 4 tiny epochs; the example trains to ~90%
    copy.deepcopy(model)  # the last step's recorded graph is dropped from copies


def test_projection_lands_on_real_patches(trained) -> None:
    task, model, _ = trained
    model = copy.deepcopy(model)
    loader = _loader(task)
    proj = project_prototypes(model, loader)
    head = find_prototype_head(model)
    x_all = torch.cat([x for x, _ in loader])
    y_all = torch.cat([y for _, y in loader])
    assert (y_all[proj.index] == head.prototype_class).all()  # a patch of its own class
    latents = []
    model.eval()
    with torch.no_grad(), recording(model):
        for x, _ in loader:  # same batches as the projection: bitwise-equal latents
            model(x)
            latents.append(head.details["latent"])
    z = torch.cat(latents)
    for j in range(head.num_prototypes):
        patch = z[proj.index[j], :, proj.row[j], proj.col[j]]
        torch.testing.assert_close(head.prototypes[j], patch, rtol=0, atol=0)
    assert torch.equal(proj.images, x_all[proj.index])
    assert proj.maps.shape == (head.num_prototypes, *z.shape[-2:])
    peak = proj.maps.flatten(1).max(1).values  # the prototype's own patch is its best match
    assert torch.allclose(peak, torch.full_like(peak, math.log(1 / 1e-4)), rtol=1e-2)
    before = task.test(model)[0]
    finetune_last_layer(model, task.x_train, task.y_train, steps=50)
    assert task.test(model)[0] >= before - 0.05
    assert head.last_layer.weight.grad is None


def test_projection_needs_every_class(trained) -> None:
    task, model, _ = trained
    only_zero = task.y_train == 0
    with pytest.raises(NetArchitectError, match="no training sample of class"):
        project_prototypes(copy.deepcopy(model), [(task.x_train[only_zero], task.y_train[only_zero])])


def test_explain(trained) -> None:
    task, model, _ = trained
    model = copy.deepcopy(model)
    proj = project_prototypes(model, _loader(task))
    out = explain_prototypes(model, task.x_test[:2], top=3, projection=proj)
    assert len(out) == 2
    e = out[0]
    assert e.predicted == int(model.eval()(task.x_test[:1]).argmax())
    assert len(e.prototypes) == 3 and e.maps.shape == (3, 8, 8)
    assert e.similarities == sorted(e.similarities, reverse=True)
    assert e.sources == proj.index[e.prototypes].tolist()
    head = find_prototype_head(model)
    assert e.classes == head.prototype_class[e.prototypes].tolist()
    assert explain_prototypes(model, task.x_test[:1], top=1)[0].sources is None
    with pytest.raises(NetArchitectError, match="top=0"):
        explain_prototypes(model, task.x_test[:1], top=0)
    assert F.softmax(torch.tensor(e.contributions), 0).shape == (3,)


def test_example_and_meta_build() -> None:
    ex = PrototypeHead.example()
    assert PrototypeHead(**ex.kwargs)(*ex.inputs).shape == (2, 3)
    meta = PrototypeHead(4, 2, device="meta")
    assert meta.prototypes.is_meta and meta.last_layer.weight.is_meta
