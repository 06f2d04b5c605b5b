"""Adapters on disk: save/load round trip with shape checks, and PEFT's layout both ways
(ours → ``PeftModel.from_pretrained`` gives the same outputs; PEFT → ours)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import NetArchitectError
from netarchitect.extend import (
    AdapterShapeError,
    LoRAStateError,
    PeftLayoutError,
    apply_lora,
    from_peft,
    load_adapters,
    lora_parameters,
    merge_lora,
    save_adapters,
    to_peft,
    unmerge_lora,
)
from netarchitect.models.gpt import gpt
from netarchitect.optimize._qkv import merge_qkv

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

G = torch.Generator().manual_seed(0)


class Small(nn.Module):
    """Linear, Conv2d, Conv1d and Embedding: the layers PEFT has."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.conv1 = nn.Conv1d(6, 6, 3, padding=1)
        self.lin = nn.Linear(6, 4)

    def forward(self, ids: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        t = self.emb(ids)  # (B, T, 6)
        c = self.conv(img).mean(dim=(2, 3))  # (B, 6)
        h = self.conv1(t.transpose(1, 2)).transpose(1, 2) + c[:, None]
        return self.lin(h)


INPUTS = (torch.randint(0, 12, (2, 5), generator=G), torch.randn(2, 3, 6, 6, generator=G))


def randomize(model: nn.Module) -> None:
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(torch.randn(p.shape, generator=G) * 0.2)


def hf_gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = gpt(vocab_size=64, dim=32, depth=2, num_heads=4, max_positions=64, seed=0).eval()
    model = copy.deepcopy(base)
    apply_lora(model, ["q_proj", "v_proj", "attn.norm", "nodes.norm"], rank=4, alpha=8, dropout=0.1)
    apply_lora(model, ["fc1"], rank=2, dora=True, rslora=True)
    randomize(model)
    ids = torch.randint(0, 64, (2, 40), generator=G)
    out = model(ids)
    path = save_adapters(model, tmp_path / "a.safetensors")
    keys = json.loads(__import__("safetensors").safe_open(str(path), "pt").metadata()[
        "netarchitect_lora"])
    assert {k["rank"] for k in keys} == {4, 2}
    fresh = copy.deepcopy(base)
    load_adapters(fresh, path)
    assert_close(fresh(ids), out)
    assert all(("lora" in n) == p.requires_grad for n, p in fresh.named_parameters())
    load_adapters(fresh, path)  # into existing adapters: values only
    assert_close(fresh(ids), out)


def test_save_load_fused_qkv_rows(tmp_path: Path) -> None:
    from netarchitect.layers.attention import MultiHeadAttention

    attn = merge_qkv(MultiHeadAttention(16, 4))
    base = copy.deepcopy(attn)
    apply_lora(attn, ["q_proj", "v_proj"], rank=2)
    randomize(attn)
    x = torch.randn(2, 40, 16, generator=G)
    save_adapters(attn, tmp_path / "qkv.safetensors")
    load_adapters(base, tmp_path / "qkv.safetensors")
    assert_close(base(x), attn(x))


def test_load_into_another_shape_is_an_error_and_untouched(tmp_path: Path) -> None:
    small = gpt(vocab_size=64, dim=32, depth=1, num_heads=4, max_positions=64, seed=0)
    apply_lora(small, "q_proj", rank=4)
    save_adapters(small, tmp_path / "a.safetensors")
    wide = gpt(vocab_size=64, dim=48, depth=1, num_heads=4, max_positions=64, seed=0)
    before = copy.deepcopy(wide.state_dict())
    with pytest.raises(AdapterShapeError, match="do not fit this model.*saved \\(4, 32\\), "
                       "the model needs \\(4, 48\\)"):
        load_adapters(wide, tmp_path / "a.safetensors")
    assert wide.state_dict().keys() == before.keys()
    assert all(p.requires_grad for p in wide.parameters())
    other = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(AdapterShapeError, match="has no weight"):
        load_adapters(other, tmp_path / "a.safetensors")


def test_io_errors(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(LoRAStateError, match="no LoRA adapters to save"):
        save_adapters(model, tmp_path / "x.safetensors")
    with pytest.raises(NetArchitectError, match="does not exist"):
        load_adapters(model, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(NetArchitectError, match="cannot read adapters"):
        load_adapters(model, tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(NetArchitectError, match="holds no netarchitect LoRA"):
        load_adapters(model, tmp_path / "plain.safetensors")
    apply_lora(model, "0", rank=2)
    save_adapters(model, tmp_path / "ok.safetensors")
    merge_lora(model)
    with pytest.raises(LoRAStateError, match="merged"):
        save_adapters(model, tmp_path / "y.safetensors")
    with pytest.raises(LoRAStateError, match="merged"):
        load_adapters(model, tmp_path / "ok.safetensors")
    with pytest.raises(LoRAStateError, match="merged"):
        to_peft(model, tmp_path / "peft")
    unmerge_lora(model)


@pytest.mark.parametrize("dora", [False, True])
def test_ours_to_peft_same_outputs(tmp_path: Path, dora: bool) -> None:
    torch.manual_seed(0)
    base = Small()
    model = copy.deepcopy(base)
    apply_lora(model, ["lin", "conv", "conv1"], rank=2, alpha=4, dora=dora)
    if not dora:
        apply_lora(model, ["emb"], rank=2, alpha=4)
    randomize(model)
    to_peft(model, tmp_path)
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    assert_close(loaded(*INPUTS), model(*INPUTS), rtol=1e-5, atol=1e-5)
    back = copy.deepcopy(base)
    from_peft(back, tmp_path)
    assert_close(back(*INPUTS), model(*INPUTS), rtol=1e-5, atol=1e-5)


def test_peft_to_ours(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = Small()
    config = peft.LoraConfig(r=3, lora_alpha=6, target_modules=["lin", "conv", "emb", "conv1"],
                             use_rslora=True, init_lora_weights=False)
    pm = peft.get_peft_model(copy.deepcopy(base), config).eval()
    pm.save_pretrained(str(tmp_path))
    ours = copy.deepcopy(base)
    from_peft(ours, tmp_path)
    assert_close(ours(*INPUTS), pm(*INPUTS), rtol=1e-5, atol=1e-5)


def test_hf_gpt2_round_trip_with_rank_pattern(tmp_path: Path) -> None:
    base = hf_gpt2()
    model = copy.deepcopy(base)
    apply_lora(model, ["c_attn"], rank=4, alpha=8)
    apply_lora(model, ["attn.c_proj"], rank=2, alpha=8)
    randomize(model)
    ids = torch.randint(0, 64, (2, 12), generator=G)
    to_peft(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] and config["rank_pattern"]
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    assert_close(loaded(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    back = copy.deepcopy(base)
    from_peft(back, tmp_path)
    assert_close(back(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)


def test_to_peft_refuses_what_peft_lacks(tmp_path: Path) -> None:
    for layer, kwargs, match in (
        (nn.LSTM(4, 4), {}, "PEFT has no LoRA for LSTM.weight_ih_l0"),
        (nn.Conv2d(4, 4, 3, groups=2), {}, "grouped"),
        (nn.Embedding(5, 4), {"dora": True}, "DoRA on embeddings"),
    ):
        model = nn.Sequential(layer)
        apply_lora(model, "0", rank=2, **kwargs)
        with pytest.raises(PeftLayoutError, match=match):
            to_peft(model, tmp_path / "x")
    mixed = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    apply_lora(mixed, "0", rank=2)
    apply_lora(mixed, "1", rank=2, dora=True)
    with pytest.raises(PeftLayoutError, match="one \\(use_rslora, use_dora\\)"):
        to_peft(mixed, tmp_path / "y")
    with pytest.raises(LoRAStateError, match="no LoRA adapters to export"):
        to_peft(nn.Linear(2, 2), tmp_path / "z")


def test_from_peft_errors(tmp_path: Path) -> None:
    model = Small()
    with pytest.raises(PeftLayoutError, match="cannot read a PEFT adapter"):
        from_peft(model, tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    save_file({}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(PeftLayoutError, match="'IA3' adapter"):
        from_peft(model, tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    save_file({"base_model.model.lin.weird": torch.zeros(1)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(PeftLayoutError, match="unexpected tensor"):
        from_peft(model, tmp_path)
    save_file({"base_model.model.lin.lora_A.weight": torch.zeros(2, 7),
               "base_model.model.lin.lora_B.weight": torch.zeros(4, 2)},
              str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(AdapterShapeError, match="lin.lora_adapters.weight.A: saved \\(2, 7\\)"):
        from_peft(model, tmp_path)
    assert type(model.lin) is nn.Linear
