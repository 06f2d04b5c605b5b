"""Meta-device analysis equals real-tensor analysis; GPT-2 small FLOPs in closed form."""

from __future__ import annotations

import torch
from torch import nn

from netarchitect.analysis import count_flops


def _convnet(device):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, device=device),
        nn.BatchNorm2d(8, device=device),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, device=device),
        nn.SiLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2, device=device),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10, device=device),
    )


def _same(a, b):
    assert (a.forward, a.backward) == (b.forward, b.backward)
    assert a.by_module == b.by_module and a.by_module_backward == b.by_module_backward
    assert a.uncounted == b.uncounted
    assert a.by_operator == b.by_operator
    assert a.by_operator_backward == b.by_operator_backward


def test_convnet_meta_equals_cpu_forward_and_backward():
    x = torch.randn(2, 3, 16, 16)
    cpu = count_flops(_convnet("cpu"), x, backward=True)
    meta = count_flops(_convnet("meta"), x.to("meta"), backward=True)
    _same(cpu, meta)
    assert cpu.by_module_backward["5"].macs == 2 * cpu.by_module["5"].macs


def test_gpt_meta_equals_cpu_forward_and_backward(make_tiny_gpt):
    idx = torch.randint(0, 50, (2, 16))
    cpu = count_flops(make_tiny_gpt("cpu"), idx, backward=True)
    meta = count_flops(make_tiny_gpt("meta"), idx.to("meta"), backward=True)
    _same(cpu, meta)  # meta runs the SDPA kernel CPU picks: the same operators too
    assert cpu.uncounted == {}
    assert set(cpu.by_module) >= {"", "wte", "h.0", "h.0.c_attn", "h.1.mlp_proj", "lm_head"}
    # backward attribution follows autograd nodes back to their modules
    assert cpu.by_module_backward["h.1.c_fc"].macs == 2 * cpu.by_module["h.1.c_fc"].macs
    assert cpu.by_module_backward["h.1"].macs == 2 * cpu.by_module["h.1"].macs
    assert cpu.by_module_backward[""].macs == cpu.backward.macs


def test_gpt2_small_forward_macs_closed_form(gpt2_cls):
    batch, tokens, dim, layers, vocab = 1, 1024, 768, 12, 50257
    model = gpt2_cls(device="meta")
    r = count_flops(model, torch.zeros(batch, tokens, dtype=torch.long, device="meta"))
    per_layer = tokens * 12 * dim * dim + 2 * tokens * tokens * dim  # projections + attention
    expected = batch * (layers * per_layer + tokens * dim * vocab)
    assert r.macs == expected
    assert r.by_module["lm_head"].macs == tokens * dim * vocab
    assert r.uncounted == {}
