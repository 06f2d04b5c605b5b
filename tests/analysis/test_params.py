"""count_params: tied weights, frozen layers, buffers, meta device, GPT-2 small exactly."""

from __future__ import annotations

import json

import torch
from torch import nn

from netarchitect.analysis import count_params
from netarchitect.analysis.params import unique_tensors


def test_gpt2_small_on_meta_counts_124_439_808(gpt2_cls):
    model = gpt2_cls(device="meta")
    counts = count_params(model)
    assert counts.total == 124_439_808
    assert counts.trainable == 124_439_808 and counts.frozen == 0
    assert counts.buffers == 1024 * 1024  # one causal mask shared by the 12 blocks
    assert counts.param_bytes == 4 * 124_439_808
    assert counts.by_module[""] == 124_439_808
    assert counts.by_module["h.0"] == 7_087_872
    assert counts.by_module["lm_head"] == 50257 * 768


def test_gpt2_small_untied_counts_163_037_184(gpt2_cls):
    assert count_params(gpt2_cls(device="meta", tie=False)).total == 163_037_184


def test_tied_frozen_and_buffers_on_real_tensors(make_tiny_gpt):
    model = make_tiny_gpt()
    for p in model.h[0].parameters():
        p.requires_grad_(False)
    counts = count_params(model)
    per_block = (
        2 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + 2 * 32 + (32 * 128 + 128) + (128 * 32 + 32)
    )
    expected = 50 * 32 + 16 * 32 + 2 * per_block + 2 * 32  # lm_head tied: not counted again
    assert counts.total == expected
    assert counts.frozen == per_block
    assert counts.trainable == expected - per_block
    assert counts.buffers == 16 * 16
    assert counts.buffer_bytes == 16 * 16  # bool mask, stored once
    assert counts.frozen_bytes == 4 * per_block


def test_same_storage_different_parameter_objects_counted_once():
    base = nn.Linear(4, 4)
    other = nn.Linear(4, 4)
    other.weight = nn.Parameter(base.weight.data)  # different Parameter, same memory
    model = nn.Sequential(base, other)
    assert count_params(model).total == 16 + 4 + 4


def test_meta_views_of_one_storage_are_one_tensor():
    w = torch.empty(3, 4, device="meta")
    assert len(unique_tensors([w, w.view(3, 4), torch.empty(3, 4, device="meta")])) == 2


def test_shared_tensor_is_trainable_if_any_registration_is():
    frozen = nn.Linear(2, 2, bias=False).requires_grad_(False)
    model = nn.Sequential(frozen, nn.Linear(2, 2, bias=False))
    model[1].weight = nn.Parameter(frozen.weight.data)  # shares memory, requires grad
    counts = count_params(model)
    assert (counts.trainable, counts.frozen) == (4, 0)


def test_to_json_round_trips_and_by_module_can_be_skipped():
    counts = count_params(nn.Linear(3, 2), by_module=False)
    assert counts.by_module == {}
    data = json.loads(counts.to_json())
    assert data["total"] == 8 and data["trainable"] == 8 and data["buffers"] == 0
