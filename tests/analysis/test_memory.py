"""memory(): parameters, gradients, optimiser state, saved activations, checkpointing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.analysis import memory, trace_activations
from netarchitect.analysis.memory import default_units

PARAM_BYTES = 4 * (8 * 16 + 16 + 16 * 4 + 4)


def mlp(device="cpu"):
    return nn.Sequential(
        nn.Linear(8, 16, device=device), nn.ReLU(), nn.Linear(16, 4, device=device)
    )


def test_mlp_exact_bytes():
    report = memory(mlp(), torch.randn(3, 8))
    assert report.params == PARAM_BYTES and report.grads == PARAM_BYTES
    assert report.optimizer_state == 2 * PARAM_BYTES + 4 * 4  # exp_avg, exp_avg_sq, 4 steps
    # saved: the input of layer 0 (3x8 floats) and the ReLU output, which layer 2 shares
    assert report.activations == 4 * (3 * 8 + 3 * 16)
    assert report.outputs == 4 * 3 * 4
    assert report.peak_training == (
        PARAM_BYTES + PARAM_BYTES + 2 * PARAM_BYTES + 16 + report.activations + report.outputs
    )
    assert report.activations_by_module == {"": 288, "0": 96, "1": 192, "2": 192}
    assert report.inference == PARAM_BYTES + report.outputs


@pytest.mark.parametrize(
    ("optimizer", "state"),
    [("sgd", 0), ("sgd_momentum", PARAM_BYTES), ("adam", 2 * PARAM_BYTES + 16), (None, 0)],
)
def test_optimizer_state(optimizer, state):
    assert memory(mlp(), torch.randn(3, 8), optimizer=optimizer).optimizer_state == state


def test_frozen_parameters_need_no_gradient_or_state():
    model = mlp()
    model[0].requires_grad_(False)
    report = memory(model, torch.randn(3, 8))
    trainable = 4 * (16 * 4 + 4)
    assert report.grads == trainable and report.optimizer_state == 2 * trainable + 2 * 4
    # layer 0 needs no gradient, so its input is not saved
    assert report.activations == 4 * 3 * 16


def test_meta_equals_cpu():
    cpu = memory(mlp(), torch.randn(3, 8), checkpointing=True)
    meta = memory(mlp("meta"), torch.randn(3, 8, device="meta"), checkpointing=True)
    assert cpu.to_dict() == meta.to_dict()


def test_checkpointing_estimate():
    report = memory(mlp(), torch.randn(3, 8), checkpointing=True)
    # unit inputs (x, linear-0 output, relu output) + the largest unit's own saved tensors
    # (here none: each unit saves only its input, already counted)
    assert report.checkpointed_activations == 4 * (3 * 8 + 3 * 16 + 3 * 16)
    assert report.activations_used == report.checkpointed_activations
    explicit = memory(mlp(), torch.randn(3, 8), checkpointing=["0", "1"])
    # outside the units: layer 2 saves the relu output; inputs of units 0 and 1
    assert explicit.checkpointed_activations == 4 * (3 * 16) + 4 * (3 * 8 + 3 * 16)


def test_checkpointing_helps_a_deep_network(make_tiny_gpt):
    model = make_tiny_gpt(layers=4)
    idx = torch.randint(0, 50, (2, 16))
    plain = memory(model, idx)
    ckpt = memory(model, idx, checkpointing=True)
    assert default_units(model) == {"h.0", "h.1", "h.2", "h.3"}
    assert ckpt.checkpointed_activations < plain.activations
    assert ckpt.peak_training < plain.peak_training


def test_default_units_without_containers():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.b(self.a(x))

    assert default_units(Net()) == {"a", "b"}


def test_loss_fn_adds_its_saved_tensors():
    x, y = torch.randn(3, 8), torch.randint(0, 4, (3,))
    plain = memory(mlp(), x)
    with_loss = memory(mlp(), x, loss_fn=lambda out: F.cross_entropy(out, y))
    # log_softmax output, the int64 targets and nll_loss's total weight
    assert with_loss.activations == plain.activations + 4 * 3 * 4 + 8 * 3 + 4
    assert with_loss.outputs == plain.outputs + 4  # the scalar loss


def test_no_grad_context_still_measures_and_trace_records_shapes():
    seen = []
    with torch.no_grad():
        trace = trace_activations(mlp(), torch.randn(3, 8), post=lambda p, m, a, o: seen.append(p))
    assert trace.total == 288 and seen == ["0", "1", "2", ""]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        memory(mlp(), torch.randn(3, 8), optimizer="lion")
    with pytest.raises(ValueError, match="no module at path"):
        memory(mlp(), torch.randn(3, 8), checkpointing=["nope"])


def test_report_serialises():
    data = json.loads(memory(mlp(), torch.randn(3, 8)).to_json())
    assert data["formula"].startswith("params + buffers + grads")
    assert data["peak_training"] > data["params"]


def test_gpt_memory_on_meta_equals_cpu(make_tiny_gpt):
    """On meta, SDPA runs the fused CPU kernel's meta function: same saved tensors."""
    idx = torch.randint(0, 50, (2, 16))
    cpu = memory(make_tiny_gpt("cpu"), idx, checkpointing=True)
    meta = memory(make_tiny_gpt("meta"), idx.to("meta"), checkpointing=True)
    assert cpu.to_dict() == meta.to_dict()
