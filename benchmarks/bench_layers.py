"""Attention and Transformer-block speed: ours vs PyTorch's modules and a naive attention.

Forward + backward, float32, 2 threads (``python -m benchmarks.bench_layers``); results go
to ``benchmarks/results/layers.json``. Cases and target ratios (ours / peer):

* ``mha_vs_torch``: ``MultiHeadAttention`` vs ``nn.MultiheadAttention``, B=8, T=256, dim=256,
  8 heads — ≤ 1.05;
* ``mha_vs_naive_T1024``: vs softmax(QKᵀ/√d)V written out (the T×T matrix materialised),
  T=1024 — ≤ 0.6;
* ``block_vs_torch``: ``TransformerBlock(norm="pre")`` vs
  ``nn.TransformerEncoderLayer(norm_first=True)`` — ≤ 1.05.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.transformer import TransformerBlock

NAME = "layers"
DIM, HEADS = 256, 8


class NaiveAttention(nn.Module):
    """Multi-head attention with the score matrix written out: the textbook implementation."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, dim = x.shape
        q, k, v = (
            p(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, T, T)
        out = scores.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(B, T, dim))


def train_step(
    module: nn.Module, x: Tensor, call: Callable[[nn.Module, Tensor], Tensor]
) -> Callable[[], None]:
    """One forward + backward with fresh gradients (parameters and input)."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        call(module, x).sum().backward()

    return step


def _self(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


def _torch_mha(module: nn.Module, x: Tensor) -> Tensor:
    return module(x, x, x, need_weights=False)[0]


def run(
    *, warmup: int, repeats: int, threads: int, results_dir: str = RESULTS_DIR
) -> dict[str, Any]:
    torch.manual_seed(0)
    results = {}
    common = {"warmup": warmup, "repeats": repeats, "threads": threads, "results_dir": results_dir}

    x = torch.randn(8, 256, DIM, requires_grad=True)
    ours = MultiHeadAttention(DIM, HEADS)
    peer = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
    results["mha_vs_torch"] = compare(
        NAME,
        train_step(ours, x, _self),
        train_step(peer, x, _torch_mha),
        case="mha_vs_torch",
        target=1.05,
        label_peer="nn.MultiheadAttention",
        extra={"B": 8, "T": 256, "dim": DIM, "heads": HEADS, "pass": "forward+backward"},
        **common,
    )

    x = torch.randn(2, 1024, DIM, requires_grad=True)
    naive = NaiveAttention(DIM, HEADS)
    results["mha_vs_naive_T1024"] = compare(
        NAME,
        train_step(ours, x, _self),
        train_step(naive, x, _self),
        case="mha_vs_naive_T1024",
        target=0.6,
        label_peer="naive softmax(QKᵀ/√d)V",
        extra={"B": 2, "T": 1024, "dim": DIM, "heads": HEADS, "pass": "forward+backward"},
        **common,
    )

    x = torch.randn(8, 256, DIM, requires_grad=True)
    block = TransformerBlock(DIM, HEADS, hidden_dim=4 * DIM)
    layer = nn.TransformerEncoderLayer(
        DIM, HEADS, 4 * DIM, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    results["block_vs_torch"] = compare(
        NAME,
        train_step(block, x, _self),
        train_step(layer, x, _self),
        case="block_vs_torch",
        target=1.05,
        label_peer="nn.TransformerEncoderLayer",
        extra={
            "B": 8,
            "T": 256,
            "dim": DIM,
            "heads": HEADS,
            "norm": "pre",
            "pass": "forward+backward",
        },
        **common,
    )
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(time_parser(__doc__, warmup=3, repeats=20), argv)
    return run(
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
