"""Plain-torch reference models for the analysis tests (no netarchitect layers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class GPT2Block(nn.Module):
    """GPT-2 block; linears have biases like Hugging Face's ``Conv1D`` layers."""

    def __init__(
        self, dim: int, heads: int, mask: torch.Tensor, device=None, attn_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.ln_1 = nn.LayerNorm(dim, device=device)
        self.c_attn = nn.Linear(dim, 3 * dim, device=device)
        self.c_proj = nn.Linear(dim, dim, device=device)
        self.ln_2 = nn.LayerNorm(dim, device=device)
        self.c_fc = nn.Linear(dim, 4 * dim, device=device)
        self.mlp_proj = nn.Linear(4 * dim, dim, device=device)
        self.register_buffer("bias", mask, persistent=False)  # shared causal mask, like HF

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, D)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    """Compact GPT-2 with the language-model head tied to the token embedding."""

    def __init__(
        self,
        vocab: int = 50257,
        positions: int = 1024,
        layers: int = 12,
        dim: int = 768,
        heads: int = 12,
        *,
        tie: bool = True,
        device=None,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        mask = torch.ones(1, 1, positions, positions, dtype=torch.bool).tril().to(device)
        self.wte = nn.Embedding(vocab, dim, device=device)
        self.wpe = nn.Embedding(positions, dim, device=device)
        self.h = nn.ModuleList(
            GPT2Block(dim, heads, mask, device, attn_dropout) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(dim, device=device)
        self.lm_head = nn.Linear(dim, vocab, bias=False, device=device)
        if tie:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def tiny_gpt(device: str = "cpu", **kwargs) -> GPT2:
    torch.manual_seed(0)
    config = {"vocab": 50, "positions": 16, "layers": 2, "dim": 32, "heads": 4} | kwargs
    return GPT2(**config, device=device)


@pytest.fixture
def gpt2_cls() -> type[GPT2]:
    return GPT2


@pytest.fixture
def make_tiny_gpt():
    return tiny_gpt
