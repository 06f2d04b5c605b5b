"""LoRA on every layer type: forward equals the dense ``W + s·ΔW`` layer, merge/unmerge are
exact, only adapters train, DoRA follows the paper, bad input is a clear error."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.testing import assert_close

from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.extend import (
    LoRAStateError,
    LoRATargetError,
    apply_lora,
    lora_parameters,
    lora_sites,
    merge_lora,
    register_lora_layer,
    remove_lora,
    unmerge_lora,
)
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.embedding import LearnedPositionalEmbedding
from netarchitect.layers.norm import DyT, InstanceNorm, LayerScale, RMSNorm
from netarchitect.optimize._qkv import merge_qkv

G = torch.Generator().manual_seed(0)


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def ids(*shape: int, high: int = 10) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=G)


# (module factory, inputs, forward) for every supported layer type
CASES = {
    "linear": (lambda: nn.Linear(8, 6), lambda: (rand(4, 8),)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1), lambda: (rand(2, 4, 9),)),
    "conv2d": (lambda: nn.Conv2d(3, 5, 3, stride=2), lambda: (rand(2, 3, 9, 9),)),
    "conv3d": (lambda: nn.Conv3d(2, 4, 3), lambda: (rand(1, 2, 5, 5, 5),)),
    "conv2d_groups": (lambda: nn.Conv2d(4, 6, 3, groups=2), lambda: (rand(2, 4, 7, 7),)),
    "conv2d_reflect": (lambda: nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect"),
                       lambda: (rand(2, 3, 7, 7),)),
    "convtranspose1d": (lambda: nn.ConvTranspose1d(4, 3, 3), lambda: (rand(2, 4, 6),)),
    "convtranspose2d": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), lambda: (rand(2, 3, 5, 5),)),
    "convtranspose3d": (lambda: nn.ConvTranspose3d(2, 3, 2), lambda: (rand(1, 2, 3, 3, 3),)),
    "embedding": (lambda: nn.Embedding(10, 6, padding_idx=0), lambda: (ids(3, 5),)),
    "learned_pos": (lambda: LearnedPositionalEmbedding(6, max_positions=16), lambda: (rand(2, 5, 6),)),
    "lstm": (lambda: nn.LSTM(6, 5, num_layers=2), lambda: (rand(5, 3, 6),)),
    "gru_bi": (lambda: nn.GRU(6, 4, bidirectional=True, batch_first=True), lambda: (rand(3, 5, 6),)),
    "rnn": (lambda: nn.RNN(6, 4), lambda: (rand(5, 3, 6),)),
    "lstm_cell": (lambda: nn.LSTMCell(6, 5), lambda: (rand(3, 6),)),
    "layernorm": (lambda: nn.LayerNorm(6), lambda: (rand(3, 6),)),
    "rmsnorm": (lambda: RMSNorm(6), lambda: (rand(3, 6),)),
    "batchnorm": (lambda: nn.BatchNorm2d(3).eval(), lambda: (rand(2, 3, 4, 4),)),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), lambda: (rand(2, 4, 3, 3),)),
    "instancenorm": (lambda: InstanceNorm(3, affine=True), lambda: (rand(2, 3, 4, 4),)),
    "layerscale": (lambda: LayerScale(6), lambda: (rand(3, 6),)),
    "dyt": (lambda: DyT(6), lambda: (rand(3, 6),)),
    "bilinear": (lambda: nn.Bilinear(5, 4, 3), lambda: (rand(2, 5), rand(2, 4))),
    "mha": (lambda: nn.MultiheadAttention(8, 2, batch_first=True),
            lambda: (rand(2, 5, 8), rand(2, 5, 8), rand(2, 5, 8))),
}


def first(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[return-value]


def randomize(model: nn.Module, std: float = 0.3) -> None:
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(torch.randn(p.shape, generator=G) * std)


def dense_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``W + s · reshape(B A)`` (or ``W + s δ``) computed by hand, by parameter name."""
    out = {}
    for name, host in model.named_modules():
        for param, d in getattr(host, "lora_targets", list)():
            w = host.get_parameter(param).detach()
            if d.full is not None:
                new = w + d.scale * d.full
            else:
                dw = d.B @ d.A
                new = w + d.scale * (dw.t() if d.transpose else dw.reshape(w.shape))
            out[f"{name}.{param}" if name else param] = new
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_forward_equals_dense_and_merge_is_exact(case: str) -> None:
    make, inputs = CASES[case]
    torch.manual_seed(0)
    model = make()
    base = copy.deepcopy(model)
    x = inputs()
    names = apply_lora(nn.Sequential(model), "0", rank=2)
    assert names == ["0"]
    assert_close(first(model(*x)), first(base(*x)))  # B = 0: the model is unchanged
    randomize(model)
    out = first(model(*x))
    dense = dense_weights(model)
    assert_close(out, first(functional_call(base, dense, x)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, first(base(*x)), atol=1e-3)
    merge_lora(model)
    assert_close(first(model(*x)), out, rtol=0, atol=1e-5)
    with pytest.raises(LoRAStateError, match="already merged"):
        merge_lora(model)
    unmerge_lora(model)
    for (name, p), q in zip(model.named_parameters(), base.parameters(), strict=False):
        if "lora" not in name:
            assert_close(p, q, rtol=0, atol=1e-6)
    assert_close(first(model(*x)), out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["linear", "conv2d", "lstm", "layernorm", "embedding", "mha"])
def test_only_adapters_get_gradients(case: str) -> None:
    make, inputs = CASES[case]
    model = make()
    apply_lora(model, [type(model)], rank=2)
    randomize(model)
    first(model(*inputs())).float().pow(2).sum().backward()
    for name, p in model.named_parameters():
        if "lora_adapters" in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name


def paper_dora(w: torch.Tensor, m: torch.Tensor, dw: torch.Tensor, s: float) -> torch.Tensor:
    """DoRA (Liu et al. 2024, eq. 5): ``m · (W + sΔW) / ‖W + sΔW‖_c``, one norm per output."""
    v = w + s * dw
    norm = v.reshape(v.shape[0], -1).norm(dim=1).clamp_min(1e-12)  # zero padding rows
    return m.view(-1, *[1] * (v.dim() - 1)) * v / norm.view(-1, *[1] * (v.dim() - 1))


@pytest.mark.parametrize("case", ["linear", "conv2d", "conv1d", "embedding", "convtranspose2d"])
@pytest.mark.parametrize("rslora", [False, True])
def test_dora_equals_the_paper(case: str, rslora: bool) -> None:
    make, inputs = CASES[case]
    model = make()
    base = copy.deepcopy(model)
    x = inputs()
    apply_lora(model, [type(model)], rank=2, alpha=3, dora=True, rslora=rslora)
    d = model.lora_adapters["weight"]
    assert_close(d.magnitude, base.weight.reshape(base.weight.shape[0], -1).norm(dim=1))
    assert_close(model(*x), base(*x))  # m = ‖W‖, ΔW = 0: unchanged
    randomize(model)
    assert d.scale == pytest.approx(3 / (math.sqrt(2) if rslora else 2))
    w = paper_dora(base.weight, d.magnitude, (d.B @ d.A).reshape(base.weight.shape), d.scale)
    expected = functional_call(base, {"weight": w.detach()}, x)
    assert_close(model(*x), expected, rtol=1e-5, atol=1e-5)
    out = model(*x)
    merge_lora(model)
    assert_close(model(*x), out, rtol=0, atol=1e-5)
    unmerge_lora(model)
    assert_close(model.weight, base.weight, rtol=0, atol=1e-6)


def test_dora_gradient_reaches_magnitude_and_factors() -> None:
    model = nn.Linear(6, 4)
    apply_lora(model, nn.Linear, rank=2, dora=True)
    randomize(model)
    model(rand(3, 6)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(model))


def test_dropout_applies_to_the_input_path_only_in_training() -> None:
    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    apply_lora(model, nn.Linear, rank=4, dropout=0.5)
    randomize(model)
    x = rand(16, 8)
    model.eval()
    out = model(x)
    assert_close(model(x), out)
    model.train()
    assert not torch.allclose(model(x), out)


def test_scale_alpha_rank_and_rslora() -> None:
    for rslora, expected in ((False, 16 / 4), (True, 16 / 2)):
        model = nn.Linear(8, 8)
        apply_lora(model, nn.Linear, rank=4, alpha=16, rslora=rslora)
        assert model.lora_adapters["weight"].scale == expected
    model = nn.Linear(8, 8)
    apply_lora(model, nn.Linear, rank=4)
    assert model.lora_adapters["weight"].scale == 1.0  # alpha defaults to rank


def test_targets_globs_regex_types_and_containers() -> None:
    model = nn.Sequential()
    model.add_module("enc", nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)))
    model.add_module("head", nn.Linear(4, 2))
    assert apply_lora(copy.deepcopy(model), "enc", rank=2) == ["enc.0", "enc.2"]  # a container
    assert apply_lora(copy.deepcopy(model), "re:enc\\.[0-9]", rank=2) == ["enc.0", "enc.2"]
    assert apply_lora(copy.deepcopy(model), re.compile("head"), rank=2) == ["head"]
    assert apply_lora(copy.deepcopy(model), ["2", "head"], rank=2) == ["enc.2", "head"]  # suffix
    assert apply_lora(copy.deepcopy(model), nn.Linear, rank=2) == ["enc.0", "enc.2", "head"]


def test_our_attention_projections_unfused_and_fused() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, num_kv_heads=2)
    x = rand(2, 40, 16)  # 80 tokens: the fused q/k/v matmul path
    fused = merge_qkv(copy.deepcopy(attn))
    for model in (attn, fused):
        base = copy.deepcopy(model)
        names = apply_lora(model, ["q_proj", "v_proj"], rank=2)
        assert names == ["q_proj", "v_proj"]
        randomize(model)
        out = model(x)
        assert not torch.allclose(out, base(x), atol=1e-4)
        merge_lora(model)
        assert_close(model(x), out, rtol=0, atol=1e-5)
        unmerge_lora(model)
        assert_close(model(x), out, rtol=0, atol=1e-5)
    # the same adapters give the same function fused and unfused (k rows untouched)
    with torch.no_grad():
        for key, d in fused.lora_adapters.items():
            src = attn.q_proj if key.endswith("@0_16") else attn.v_proj
            d.A.copy_(src.lora_adapters["weight"].A)
            d.B.copy_(src.lora_adapters["weight"].B)
    assert_close(fused(x), attn(x), rtol=1e-5, atol=1e-5)
    assert "qkv_weight@16_24" not in fused.lora_adapters


def test_moe_experts() -> None:
    from netarchitect.layers.moe import MoEFeedForward

    torch.manual_seed(0)
    moe = MoEFeedForward(8, num_experts=3, top_k=2, capacity_factor=None, hidden_dim=8)
    names = apply_lora(moe, "experts.*.fc1", rank=2)
    assert names == ["experts.0.fc1", "experts.1.fc1", "experts.2.fc1"]
    randomize(moe)
    x = rand(2, 5, 8)
    out = moe(x)
    merge_lora(moe)
    assert_close(moe(x), out, rtol=0, atol=1e-5)


def test_hf_conv1d_fast_path_matches_dense() -> None:
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(6, 4)  # weight (4, 6): input-first
    base = copy.deepcopy(layer)
    apply_lora(layer, Conv1D, rank=2)
    randomize(layer)
    x = rand(3, 4)
    assert_close(layer(x), functional_call(base, dense_weights(layer), (x,)), rtol=1e-5, atol=1e-5)


def test_register_lora_layer_adds_a_type() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

    model = nn.Sequential(Scale())
    with pytest.raises(LoRATargetError, match="cannot adapt '0' \\(Scale\\); supported"):
        apply_lora(model, "0")
    register_lora_layer(Scale, ["w"])
    try:
        assert apply_lora(model, "0", rank=1) == ["0"]
    finally:
        from netarchitect.extend.lora import LORA_LAYER_TYPES

        LORA_LAYER_TYPES.pop(0)


def test_remove_lora_restores_the_module() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    base = copy.deepcopy(model)
    apply_lora(model, "0", rank=2)
    randomize(model)
    x = rand(2, 4)
    out = model(x)
    remove_lora(copy.deepcopy(model))  # unmerged: adapters dropped
    kept = remove_lora(copy.deepcopy(model), merge=True)
    assert type(kept[0]) is nn.Linear and all(p.requires_grad for p in kept.parameters())
    assert_close(kept(x), out, rtol=0, atol=1e-5)
    merged = merge_lora(copy.deepcopy(model))
    dropped = remove_lora(merged)
    assert_close(dropped(x), base(x), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- bad input


def test_glob_that_matches_nothing_lists_close_names() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    model.add_module("q_proj", nn.Linear(4, 4))
    with pytest.raises(LoRATargetError, match="'q_prj' matches no module.*did you mean 'q_proj'"):
        apply_lora(model, "q_prj")
    with pytest.raises(LoRATargetError, match="'Conv2d' matches no module"):
        apply_lora(model, nn.Conv2d)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_unsupported_type_names_it_and_the_supported_ones() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.zeros(3, 3))

    model = nn.Sequential(nn.Linear(3, 3), Odd())
    with pytest.raises(LoRATargetError, match="'1' \\(Odd\\); supported types: Linear, Conv1d"):
        apply_lora(model, ["0", "1"])
    assert type(model[0]) is nn.Linear  # untouched
    with pytest.raises(LoRATargetError, match="no weight-bearing module"):
        apply_lora(nn.Sequential(nn.ReLU()), "0")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"rank": 5}, "rank=5 exceeds the dims of '0.weight' \\(4x8"),
     ({"rank": 0}, "rank must be a positive int"),
     ({"alpha": -1}, "alpha must be a positive"),
     ({"dropout": 1.0}, "dropout must be in"),
     ({"dora": True, "rank": 2}, None)],
)
def test_bad_options_leave_the_model_untouched(kwargs: dict, match: str | None) -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4))
    target = ["0", "1"] if kwargs.get("dora") else "0"
    with pytest.raises(SpecError, match=match or "dora=True needs a matrix"):
        apply_lora(model, target, **kwargs)
    assert type(model[0]) is nn.Linear and all(p.requires_grad for p in model.parameters())


def test_bad_targets_and_states() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    for bad in ([], "", [3]):
        with pytest.raises(LoRATargetError, match="targets must be"):
            apply_lora(model, bad)  # type: ignore[arg-type]
    with pytest.raises(LoRAStateError, match="no LoRA adapters"):
        merge_lora(model)
    apply_lora(model, "0", rank=2)
    with pytest.raises(LoRAStateError, match="not merged"):
        unmerge_lora(model)
    with pytest.raises(LoRAStateError, match="already has a LoRA adapter"):
        apply_lora(model, "0", rank=2)
    merge_lora(model)
    with pytest.raises(LoRAStateError, match="merged adapters"):
        apply_lora(model, "0", rank=2)
    assert isinstance(LoRAStateError("x"), NetArchitectError)


def test_tied_weight_refuses_to_merge() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.Sequential(emb, head)
    apply_lora(model, "0", rank=2)
    with pytest.raises(LoRAStateError, match="tied to 1.weight"):
        merge_lora(model)
    assert not model[0].lora_merged


def test_lora_sites_describe_without_changing() -> None:
    model = nn.Sequential(nn.LSTM(4, 3, num_layers=2))
    sites = lora_sites(model, "0")
    assert [s.param for s in sites] == ["weight_ih_l0", "weight_hh_l0", "weight_ih_l1",
                                        "weight_hh_l1"]
    assert type(model[0]) is nn.LSTM


def test_padded_embedding_fast_path_keeps_padding_rows_frozen() -> None:
    emb = nn.Embedding(10, 6, padding_idx=0)
    apply_lora(emb, nn.Embedding, rank=2)
    randomize(emb)
    F.mse_loss(emb(ids(3, 4)), torch.zeros(3, 4, 6)).backward()
    assert emb.lora_adapters["weight"].B.grad[0].abs().sum() == 0


def test_mha_with_separate_projections_and_repr() -> None:
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True)
    base = copy.deepcopy(mha)
    apply_lora(mha, nn.MultiheadAttention, rank=2)
    assert sorted(mha.lora_adapters) == ["k_proj_weight", "out_proj__weight", "q_proj_weight",
                                         "v_proj_weight"]
    randomize(mha)
    q, kv = rand(2, 3, 8), rand(2, 4, 6)
    out = mha(q, kv, kv)[0]
    assert_close(out, functional_call(base, dense_weights(mha), (q, kv, kv))[0],
                 rtol=1e-5, atol=1e-5)
    assert "rank=2, scale=1" in repr(mha.lora_adapters["q_proj_weight"])
    norm = nn.LayerNorm(4)
    apply_lora(norm, nn.LayerNorm)
    assert "full" in repr(norm.lora_adapters["weight"])


def test_layers_with_extra_forward_arguments_take_the_generic_path() -> None:
    from netarchitect.layers.token_embedding import LMHead

    head = LMHead(8, 10)
    base = copy.deepcopy(head)
    apply_lora(head, LMHead, rank=2)
    assert head.lora_kind == "generic"
    randomize(head)
    x = rand(2, 5, 8)
    expected = functional_call(base, dense_weights(head), (x,), {"logits_to_keep": 2})
    assert_close(head(x, logits_to_keep=2), expected)


class ToyExperts(nn.Module):
    """Stacked expert weights (E, out, in), applied per expert."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Parameter(torch.randn(3, 6, 4, generator=G))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("eoi,bi->ebo", self.up, x)


@pytest.mark.parametrize("dora", [False, True])
def test_stacked_experts_get_one_update_per_expert(dora: bool, tmp_path) -> None:
    from netarchitect.extend import load_adapters, save_adapters

    experts = ToyExperts()
    base = copy.deepcopy(experts)
    apply_lora(experts, ToyExperts, rank=2, dora=dora)
    d = experts.lora_adapters["up"]
    assert d.A.shape == (3, 2, 4) and d.B.shape == (3, 6, 2)
    randomize(experts)
    x = rand(5, 4)
    w = base.up + d.scale * torch.bmm(d.B, d.A)
    if dora:
        w = d.magnitude[..., None] * w / w.norm(dim=-1, keepdim=True)
    assert_close(experts(x), functional_call(base, {"up": w.detach()}, (x,)), rtol=1e-5, atol=1e-5)
    out = experts(x)
    merge_lora(experts)
    assert_close(experts(x), out, rtol=0, atol=1e-5)
    unmerge_lora(experts)
    assert_close(experts.up, base.up, rtol=0, atol=1e-6)
    save_adapters(experts, tmp_path / "e.safetensors")
    load_adapters(base, tmp_path / "e.safetensors")
    assert_close(base(x), out)
    with pytest.raises(LoRATargetError, match="rank=5 exceeds"):
        apply_lora(ToyExperts(), ToyExperts, rank=5)
