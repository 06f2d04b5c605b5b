"""Meta-device memory follows the attention kernel PyTorch picks on CPU.

On CPU, ``F.scaled_dot_product_attention`` runs the fused flash kernel (saves q, k, v,
the output and a log-sum-exp) only where ``sdp_utils`` allows it: 4-D inputs, the same
head dim for q, k and v, last-dim stride 1, no dropout (``check_for_dropout``), a mask
that broadcasts and needs no gradient. Everything else, notably attention dropout in
training, runs the math path, which keeps the full L x S attention matrix (and the
dropout mask) for backward. Meta predictions must make the same choice.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.analysis import memory
from netarchitect.analysis._meta_attention import cpu_attention_backend, fused_attention_on_meta
from netarchitect.analysis._meta_kernels import CpuKernelsOnMeta

B, H, L, E = 2, 4, 6, 8


class Attention(nn.Module):
    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.kwargs = kwargs

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, **self.kwargs)


def _qkv(device, q_heads=H, kv_heads=H, length=L, v_dim=E, dims=4):
    g = torch.Generator().manual_seed(0)
    shapes = [(B, q_heads, length, E), (B, kv_heads, L, E), (B, kv_heads, L, v_dim)]
    tensors = [torch.randn(s[4 - dims :], generator=g) for s in shapes]
    return [t.to(device).requires_grad_() for t in tensors]


CASES = {
    "plain": ({}, {}),
    "causal": ({"is_causal": True}, {}),
    "bool-mask": ({"attn_mask": torch.ones(L, L, dtype=torch.bool).tril()}, {}),
    "float-mask": ({"attn_mask": torch.zeros(1, 1, L, L)}, {}),
    "dropout": ({"dropout_p": 0.1}, {}),
    "dropout-causal": ({"dropout_p": 0.5, "is_causal": True}, {}),
    "gqa": ({"enable_gqa": True}, {"kv_heads": 2}),
    "value-dim": ({}, {"v_dim": 5}),
    "3d": ({}, {"dims": 3}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sdpa_saved_tensors_meta_equal_cpu(name):
    kwargs, shapes = CASES[name]
    meta_kwargs = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    cpu = memory(Attention(**kwargs), _qkv("cpu", **shapes), optimizer=None)
    meta = memory(Attention(**meta_kwargs), _qkv("meta", **shapes), optimizer=None)
    assert meta.to_dict() == cpu.to_dict()


def test_backend_choice_follows_sdp_utils():
    q, k, v = _qkv("meta")
    assert cpu_attention_backend(q, k, v) == "flash"
    assert cpu_attention_backend(q, k, v, dropout_p=0.1) == "math"  # check_for_dropout
    assert cpu_attention_backend(q, k, v[..., :5]) == "math"  # check_head_dim_size_cpp
    strided = torch.empty(B, H, L, 2 * E, device="meta")[..., ::2]
    assert cpu_attention_backend(strided, k, v) == "math"  # last-dim stride must be 1
    grad_mask = torch.zeros(L, L, device="meta", requires_grad=True)
    assert cpu_attention_backend(q, k, v, grad_mask) == "math"  # a mask needing grad
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        assert cpu_attention_backend(q, k, v) == "math"  # flash disabled by the user
    assert fused_attention_on_meta(q, k, v, dropout_p=0.1) is None
    assert fused_attention_on_meta(q[0], k[0], v[0]) is None  # 3-D: math path
    causal_and_mask = fused_attention_on_meta(q, k, v, torch.zeros(L, L, device="meta"), 0, True)
    assert causal_and_mask is None  # rejected by PyTorch itself: left to raise its error
    for device in ("cpu", "meta"):  # a 0-d mask fails the same way on CPU and on meta
        scalar = torch.zeros((), device=device)
        with CpuKernelsOnMeta(), pytest.raises(IndexError, match="Dimension specified as -2"):
            F.scaled_dot_product_attention(*_qkv(device), attn_mask=scalar)
    assert fused_attention_on_meta(*_qkv("cpu")) is None  # real tensors run as they are
    out = fused_attention_on_meta(q, k, v, torch.ones(L, L, dtype=torch.bool, device="meta"))
    assert out is not None and out.shape == q.shape


def _hf_gpt2(device: str, dropout: float, train: bool):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=50,
        n_positions=16,
        n_embd=32,
        n_layer=2,
        n_head=4,
        attn_pdrop=dropout,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.GPT2LMHeadModel(config)
    return model.train(train)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_hf_gpt2_meta_prediction_equals_cpu(dropout, train):
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    cpu = memory(_hf_gpt2("cpu", dropout, train), idx)
    meta = memory(_hf_gpt2("meta", dropout, train), idx.to("meta"))
    assert meta.to_dict() == cpu.to_dict()
    if dropout and train:  # the math path keeps attention weights and the dropout mask
        eval_cpu = memory(_hf_gpt2("cpu", dropout, False), idx)
        assert cpu.activations > eval_cpu.activations + 2 * 2 * 4 * 16 * 16 * 4


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_our_gpt_meta_prediction_equals_cpu(make_tiny_gpt, dropout, train):
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    cpu = memory(make_tiny_gpt("cpu", attn_dropout=dropout).train(train), idx)
    meta = memory(make_tiny_gpt("meta", attn_dropout=dropout).train(train), idx.to("meta"))
    assert meta.to_dict() == cpu.to_dict()
