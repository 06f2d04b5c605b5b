"""Attention FLOPs: SDPA on CPU (every kernel), nn.MultiheadAttention and its fused path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from netarchitect.analysis import attention_cost, count_flops
from netarchitect.analysis.flop_formulas import classify

B, H, L, S, E = 2, 3, 5, 7, 8
SCORES = B * H * L * S
MACS = SCORES * (E + E)
SCALING = B * H * L * E + B * H * S * E  # q and k scaled by sqrt(scale), as the math path does


class Attention(nn.Module):
    def forward(self, q, k, v, is_causal=False, attn_mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


def qkv(device="cpu", requires_grad=False):
    g = torch.Generator().manual_seed(0)
    shapes = [(B, H, L, E), (B, H, S, E), (B, H, S, E)]
    return [torch.randn(s, generator=g).to(device).requires_grad_(requires_grad) for s in shapes]


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_on_cpu_counts_the_fused_kernel(causal):
    r = count_flops(Attention(), (*qkv(requires_grad=True), causal), backward=True)
    assert list(r.by_operator) == ["aten._scaled_dot_product_flash_attention_for_cpu"]
    assert r.forward.macs == MACS  # causal: full score matrix, no saving (documented)
    assert r.forward.other_flops == SCALING + (SCORES if causal else 0) + 5 * SCORES
    assert r.backward.macs == 2 * MACS
    assert r.backward.other_flops == 4 * SCORES + SCALING
    assert r.uncounted == {}


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bool])
def test_sdpa_with_explicit_mask(mask_dtype):
    mask = torch.ones(L, S).tril().to(mask_dtype)
    r = count_flops(Attention(), (*qkv(), False, mask))
    assert (r.macs, r.other_flops) == (MACS, SCALING + SCORES + 5 * SCORES)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_math_path_equals_fused_kernel_and_meta_follows_cpu(causal):
    fused = count_flops(Attention(), (*qkv(requires_grad=True), causal), backward=True)
    with sdpa_kernel(SDPBackend.MATH):
        math = count_flops(Attention(), (*qkv(requires_grad=True), causal), backward=True)
        meta_math = count_flops(Attention(), (*qkv("meta", True), causal), backward=True)
    meta = count_flops(Attention(), (*qkv("meta", requires_grad=True), causal), backward=True)
    assert "aten.bmm" in math.by_operator  # a different kernel ...
    assert (math.forward, math.backward) == (fused.forward, fused.backward)  # ... same numbers
    assert meta.by_operator == fused.by_operator  # meta runs the kernel CPU picks
    assert meta_math.by_operator == math.by_operator
    assert (meta.forward, meta.backward) == (fused.forward, fused.backward)


def test_sdpa_grouped_query_attention_meta_equals_cpu():
    class GQA(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    def inputs(device):
        q = torch.randn(B, 4, L, E, device=device, requires_grad=True)
        k = torch.randn(B, 2, S, E, device=device, requires_grad=True)
        v = torch.randn(B, 2, S, E, device=device, requires_grad=True)
        return q, k, v

    cpu = count_flops(GQA(), inputs("cpu"), backward=True)
    meta = count_flops(GQA(), inputs("meta"), backward=True)
    assert cpu.forward.macs == B * 4 * L * S * 2 * E
    assert (meta.forward, meta.backward) == (cpu.forward, cpu.backward)


class RawKernel(nn.Module):
    """Calls one aten attention kernel directly (meta kernels exist for the GPU ones)."""

    def __init__(self, op, *extra, layout="bhle", **kwargs) -> None:
        super().__init__()
        self.op, self.extra, self.layout, self.kwargs = op, extra, layout, kwargs

    def forward(self, q, k, v):
        if self.layout == "bshe":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return self.op(q, k, v, *self.extra, **self.kwargs)[0]


aten = torch.ops.aten


@pytest.mark.parametrize(
    ("module", "masked"),
    [
        (RawKernel(aten._scaled_dot_product_flash_attention_for_cpu, 0.0, True), True),
        (RawKernel(aten._scaled_dot_product_efficient_attention, None, False), False),
        (RawKernel(aten._scaled_dot_product_efficient_attention, None, False, 0.0, True), True),
        (RawKernel(aten._scaled_dot_product_flash_attention, 0.0, True), True),
        (RawKernel(aten._scaled_dot_product_cudnn_attention, None, False), False),
        (RawKernel(aten._scaled_dot_product_fused_attention_overrideable), False),
        (
            RawKernel(
                aten._efficient_attention_forward,
                None,
                None,
                None,
                None,
                None,
                0.0,
                1,
                layout="bshe",
            ),
            True,
        ),
        (
            RawKernel(
                aten._flash_attention_forward, None, None, L, S, 0.0, False, False, layout="bshe"
            ),
            False,
        ),
    ],
)
def test_every_sdpa_kernel_has_a_formula(module, masked):
    r = count_flops(module, qkv("meta"))
    assert r.uncounted == {}
    assert r.forward.macs == MACS
    assert r.forward.other_flops == SCALING + (SCORES if masked else 0) + 5 * SCORES


def test_backward_kernels_and_varlen_formulas():
    q, k, v = qkv("meta")
    out = torch.empty_like(q)
    lse = torch.empty(B, H, L, device="meta")
    info = classify(aten._scaled_dot_product_flash_attention_for_cpu_backward.default)
    kind, cost = info.cost((out, q, k, v, out, lse, 0.0, False), {}, None)
    assert (kind, cost) == ("formula", (2 * MACS, 4 * SCORES + SCALING))
    info = classify(aten._scaled_dot_product_efficient_attention_backward.default)
    _, cost = info.cost((out, q, k, v, None, out, lse, lse, lse, 0.5, [True] * 4), {}, None)
    assert cost == (2 * MACS, 4 * SCORES + SCALING + SCORES)  # dropout: one per score
    # variable-length flash attention: two sequences of 2 and 3 tokens (H=3, E=8)
    total_q = torch.randn(5, H, E)
    cu = torch.tensor([0, 2, 5])
    info = classify(aten._flash_attention_forward.default)
    _, cost = info.cost((total_q, total_q, total_q, cu, cu, 3, 3, 0.0, False, False), {}, None)
    assert cost[0] == H * (2 * 2 + 3 * 3) * 2 * E
    assert attention_cost((H, 2, E), (H, 2, E), (H, 2, E))[0] == H * 4 * 2 * E


def test_multihead_attention_train_and_fused_eval_path_agree():
    dim, heads, batch, length = 16, 4, 2, 6
    expected = 4 * batch * length * dim * dim + 2 * batch * length * length * dim
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    x = torch.randn(batch, length, dim)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, x):
            return self.attn(x, x, x)[0]

    model = SelfAttention()
    train = count_flops(model.train(), x, backward=True)
    assert train.forward.macs == expected
    assert train.by_module["attn"].macs == expected
    model.eval()
    with torch.no_grad():
        fused = count_flops(model, x)
    assert list(fused.by_operator) == ["aten._native_multi_head_attention"]
    assert fused.forward == train.forward  # same MACs and the same other FLOPs
    with torch.no_grad():
        meta = count_flops(SelfAttention().to("meta").eval(), x.to("meta"))
    assert meta.forward == fused.forward


def test_transformer_encoder_layer_fused_path():
    dim, heads, hidden, batch, length = 16, 4, 32, 2, 6
    layer = nn.TransformerEncoderLayer(dim, heads, hidden, batch_first=True).eval()
    x = torch.randn(batch, length, dim)
    with torch.no_grad():
        fused = count_flops(layer, x)
    attention = 4 * batch * length * dim * dim + 2 * batch * length * length * dim
    ffn = 2 * batch * length * dim * hidden
    assert list(fused.by_operator) == ["aten._transformer_encoder_layer_fwd"]
    assert fused.macs == attention + ffn
    unfused = count_flops(layer.train(), x)  # dropout adds its own element-wise work
    assert unfused.macs == fused.macs
    meta_layer = nn.TransformerEncoderLayer(dim, heads, hidden, batch_first=True, device="meta")
    with torch.no_grad():
        meta = count_flops(meta_layer.eval(), x.to("meta"))
    assert meta.forward == fused.forward


class Encoder(nn.Module):
    def __init__(self, device=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, device=device)
        self.enc = nn.TransformerEncoder(layer, 2)

    def forward(self, x, mask=None):
        return self.enc(x, src_key_padding_mask=mask)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("lengths", [(6, 3), (4, 3)], ids=["one-full", "all-padded"])
def test_transformer_encoder_nested_fast_path_counts_the_padded_input(context, lengths):
    """Padded-shape convention: the nested fast path counts like the dense masked path.

    The dense equivalent is the same eval-mode model on the same padded input and mask,
    with autograd on (the fast path needs grad off): it computes every layer on the full
    (B, T, E) input with the key padding mask, which is what "as if the padded dense
    tensors were processed" means. Train mode would add dropout work, and dropping the
    mask would drop the mask additions; neither is the equivalent.
    """
    batch, steps, dim, heads, layers = 2, 6, 16, 4, 2
    x = torch.randn(batch, steps, dim)
    mask = torch.arange(steps)[None, :] >= torch.tensor(lengths)[:, None]  # True = padding
    model = Encoder().eval()
    dense = count_flops(model, (x, mask))
    with context():
        fast = count_flops(model, (x, mask))
    assert "aten._transformer_encoder_layer_fwd" in fast.by_operator
    assert "aten._transformer_encoder_layer_fwd" not in dense.by_operator
    assert fast.uncounted == dense.uncounted == {}
    for i in range(layers):
        assert fast.by_module[f"enc.layers.{i}"] == dense.by_module[f"enc.layers.{i}"]
    assert fast.macs == dense.macs
    # the fast path negates the padding mask once more (logical_not) to build the nested tensor
    assert fast.other_flops == dense.other_flops + batch * steps
    scores = batch * heads * steps * steps
    unmasked = count_flops(model, x)
    assert dense.other_flops == unmasked.other_flops + layers * scores + batch * steps


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_nested_query_of_unknown_origin_is_padded_to_its_longest_sequence():
    """A user-built nested tensor through MultiheadAttention's fast path counts like the
    dense batch padded to its longest sequence, with the key padding mask."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, x, mask=None):
            return self.attn(x, x, x, key_padding_mask=mask, need_weights=False)[0]

    a, b = torch.randn(6, 16), torch.randn(4, 16)
    with torch.no_grad():
        nested = count_flops(SelfAttention(), torch.nested.nested_tensor([a, b]))
    padded = torch.zeros(2, 6, 16)
    padded[0], padded[1, :4] = a, b
    mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    dense = count_flops(SelfAttention(), (padded, mask))  # autograd on: the unfused path
    assert list(nested.by_operator) == ["aten._native_multi_head_attention"]
    assert "aten._native_multi_head_attention" not in dense.by_operator
    assert nested.forward == dense.forward
