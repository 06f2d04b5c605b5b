"""Pipeline training's pieces in one process (a one-rank group, one stage): the step's loss
and gradients, clipping over the stages and the weight exchange. Two stages on two
processes are checked against the single-process curve in test_train.py."""

import math

import pytest
import torch

from netarchitect.network import build
from netarchitect.parallel.train_pipeline import PipelineTraining
from netarchitect.spec import load_spec
from tests.parallel._ranks_train import tiny_spec


def _model():
    return build(load_spec(tiny_spec(mlp=8)), seed=3)


def _loss(out, y):
    return torch.nn.functional.cross_entropy(out, y)


def test_a_step_gives_the_batch_mean_loss_and_gradients(one_rank):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    ref = _model()
    ref_loss = _loss(ref(x), y)
    ref_loss.backward()
    model = _model()
    pipe = PipelineTraining(model, x[:2], stages=1, microbatches=4, schedule="gpipe",
                            loss_fn=_loss, device=torch.device("cpu"))
    assert pipe.module.node_ids == tuple(model.nodes)
    loss = pipe.step(x, y)
    assert loss == pytest.approx(ref_loss.item(), abs=1e-6)
    grads = {n: p.grad for n, p in model.named_parameters()}
    torch.testing.assert_close(grads, {n: p.grad for n, p in ref.named_parameters()})
    expected = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.01))
    assert pipe.clip(0.01) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close({n: p.grad for n, p in model.named_parameters()},
                               {n: p.grad for n, p in ref.named_parameters()})
    assert math.isnan(pipe.clip(0.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pipe.sync_weights()  # one rank: its own weights come back unchanged
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)


def test_a_large_clip_leaves_gradients_alone(one_rank):
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    model = _model()
    pipe = PipelineTraining(model, x[:2], stages=1, microbatches=1, schedule="1f1b",
                            loss_fn=_loss, device=torch.device("cpu"))
    pipe.step(x, y)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    norm = pipe.clip(1e6)
    assert norm == pytest.approx(float(torch.linalg.vector_norm(
        torch.stack([g.norm() for g in grads.values()]))), rel=1e-6)
    torch.testing.assert_close({n: p.grad for n, p in model.named_parameters()}, grads,
                               rtol=0, atol=0)
