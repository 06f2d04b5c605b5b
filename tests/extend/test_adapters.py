"""Bottleneck adapters: zero-initialised (the model is unchanged), placed after attention/MLP
of our Transformers or after any module, only adapters train, removable."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.extend import (
    BottleneckAdapter,
    LoRATargetError,
    adapter_parameters,
    add_bottleneck_adapters,
    insert_adapter,
    remove_adapters,
)
from netarchitect.models.bert import bert
from netarchitect.models.gpt import gpt

G = torch.Generator().manual_seed(0)
IDS = torch.randint(0, 64, (2, 8), generator=G)


def small_gpt() -> nn.Module:
    return gpt(vocab_size=64, dim=32, depth=2, num_heads=4, max_positions=16, seed=0).eval()


@pytest.mark.parametrize(("config", "count"), [("houlsby", 4), ("pfeiffer", 2), (["attn"], 2)])
def test_adapters_start_as_identity_and_only_they_train(config: object, count: int) -> None:
    model = small_gpt()
    base = model(IDS)
    names = add_bottleneck_adapters(model, config=config, bottleneck=4)  # type: ignore[arg-type]
    assert len(names) == count and names[0].endswith(".fn")
    assert_close(model(IDS), base)
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.add_(torch.randn(p.shape, generator=G) * 0.2)
    out = model(IDS)
    assert not torch.allclose(out, base, atol=1e-4)
    out.pow(2).mean().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == ("bottleneck_adapter" in n), n
    copied = copy.deepcopy(model)  # the hooks follow the copy's own adapters
    assert_close(copied(IDS), out)
    with torch.no_grad():
        for p in adapter_parameters(copied):
            p.zero_()
    assert_close(model(IDS), out)
    remove_adapters(model)
    assert_close(model(IDS), base)
    assert not adapter_parameters(model) and all(p.requires_grad for p in model.parameters())


def test_houlsby_formula() -> None:
    adapter = BottleneckAdapter(6, 2, act_layer="gelu")
    with torch.no_grad():
        adapter.up.weight.normal_(generator=G)
    h = torch.randn(3, 6, generator=G)
    expected = h + adapter.up(nn.functional.gelu(adapter.down(h)))
    assert_close(adapter(h), expected)


def test_insert_after_any_module_and_on_bert() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(2, 4, generator=G)
    base = model(x)
    adapter = insert_adapter(model, "0", reduction=4)
    assert adapter.down.out_features == 2 and adapter.down.in_features == 8
    assert_close(model(x), base)
    lstm = nn.Sequential(nn.LSTM(4, 5, batch_first=True))
    insert_adapter(lstm, "0", dim=5, bottleneck=2)  # tuple outputs: the first item
    assert lstm(torch.randn(2, 3, 4))[0].shape == (2, 3, 5)
    encoder = bert(vocab_size=64, dim=32, depth=1, num_heads=4, max_positions=16, seed=0,
                   head="classification").eval()
    base = encoder(IDS)
    insert_adapter(encoder, "block_0.mlp.fn", bottleneck=4)  # ``nodes.`` may be left out
    assert_close(encoder(IDS), base)


def test_bad_input() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(LoRATargetError, match="matches no module"):
        insert_adapter(model, "missing")
    insert_adapter(model, "0", bottleneck=2)
    with pytest.raises(SpecError, match="already has a bottleneck adapter"):
        insert_adapter(model, "0")
    with pytest.raises(SpecError, match="cannot tell the output width"):
        insert_adapter(nn.Sequential(nn.ReLU()), "0")
    with pytest.raises(LoRATargetError, match="no TransformerBlock"):
        add_bottleneck_adapters(model)
    with pytest.raises(SpecError, match="config="):
        add_bottleneck_adapters(small_gpt(), config="nope")
    with pytest.raises(SpecError, match="bottleneck must be a positive int"):
        BottleneckAdapter(4, 0)
