"""Activation checkpointing and bf16 autocast: memory and training-step time vs the plain model.

A 12-layer, dim-512 causal Transformer of our ``TransformerBlock`` s (8 heads, GELU MLP ×4,
final LayerNorm), B=1, T=512, float32, one forward + backward per step, 2 threads
(``python -m benchmarks.bench_optimize_memory``); results go to
``benchmarks/results/optimize.json``. Cases (ours / peer = checkpointed / plain step time):

* ``selective_checkpointing_T512``: ``apply_checkpointing(model, "selective")`` — step time
  ≤ 1.35×, activation memory ≤ 40% of the plain model's (``extra``);
* ``full_checkpointing_T512``: ``apply_checkpointing(model, "blocks")`` — reported;
* ``selective_vs_full_T512``: the two checkpointed models against each other (one pair);
* ``bf16_autocast_step``: ``autocast_policy("bf16")`` vs float32 on a 4-layer stack, run only
  where :func:`~netarchitect.optimize.precision.bf16_support` finds native bf16; otherwise the
  reason it was skipped is recorded in the other cases' ``extra["bf16"]``.

Activation memory is measured with
:func:`~netarchitect.optimize.checkpointing.activation_bytes`: the storages a training forward
pass (and the loss) creates that are still alive when it ends — what is held for backward.
``analysis.memory``'s saved-tensor hooks are not used for the ratio: a checkpointed region
replaces them with its own, so they miss the block inputs a checkpoint keeps and the tensors
a selective policy caches (its estimates are recorded in ``extra`` for reference).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect.analysis.memory import memory
from netarchitect.layers.transformer import TransformerBlock
from netarchitect.optimize.checkpointing import activation_bytes, apply_checkpointing
from netarchitect.optimize.precision import autocast_policy, bf16_support

NAME = "optimize"
DEPTH, DIM, HEADS, SEQ, BATCH = 12, 512, 8, 512, 1
MEMORY_TARGET, TIME_TARGET = 0.40, 1.35


class TransformerStack(nn.Module):
    """``depth`` causal pre-norm Transformer blocks and a final LayerNorm."""

    def __init__(self, depth: int, dim: int, num_heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, causal=True) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)  # (B, T, dim)
        return self.norm(x)


def _loss(out: Tensor) -> Tensor:
    return out.float().pow(2).mean()


def train_step(model: nn.Module, x: Tensor, dtype: str | None = None) -> Callable[[], None]:
    """One forward + backward with fresh gradients (under the autocast policy if ``dtype``)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast_policy(dtype or "bf16", device_type="cpu", enabled=dtype is not None):
            loss = _loss(model(x))
        loss.backward()

    return step


def _memory_extra(model: nn.Module, plain: nn.Module, x: Tensor) -> dict[str, Any]:
    base = activation_bytes(plain, (x,), loss_fn=_loss)
    ours = activation_bytes(model, (x,), loss_fn=_loss)
    return {
        "activation_bytes": ours,
        "baseline_activation_bytes": base,
        "activation_fraction": ours / base,
        "memory_target": MEMORY_TARGET,
        "analysis_memory_activations": memory(model, (x,), optimizer=None).activations,
    }


def run(
    *,
    warmup: int,
    repeats: int,
    threads: int,
    results_dir: str = RESULTS_DIR,
    depth: int = DEPTH,
    dim: int = DIM,
    seq: int = SEQ,
    batch: int = BATCH,
) -> dict[str, Any]:
    torch.manual_seed(0)
    common = {"warmup": warmup, "repeats": repeats, "threads": threads, "results_dir": results_dir}
    shape = {"depth": depth, "dim": dim, "heads": HEADS, "T": seq, "B": batch,
             "pass": "forward+backward", "memory_measure": "activation_bytes (live storages)"}
    support = bf16_support()
    bf16: dict[str, Any] = {**support.to_dict()}
    if not support.native:
        bf16["skipped"] = (
            f"bf16 is not native here (capability {support.capability}, flags "
            f"{support.cpu_flags or 'none'}, bf16/fp32 matmul time {support.bf16_over_fp32:.1f}×)"
        )

    plain = TransformerStack(depth, dim, HEADS).train()
    x = torch.randn(batch, seq, dim)
    estimate = memory(plain, (x,), optimizer=None, checkpointing=True)
    reference = {
        "analysis_memory_baseline_activations": estimate.activations,
        "analysis_memory_checkpointed_estimate": estimate.checkpointed_activations,
    }
    results: dict[str, Any] = {}
    models = {p: apply_checkpointing(copy.deepcopy(plain), p) for p in ("selective", "blocks")}
    for case, policy, target in (
        ("selective_checkpointing_T512", "selective", TIME_TARGET),
        ("full_checkpointing_T512", "blocks", None),
    ):
        model = models[policy]
        extra = {**shape, "policy": policy, **_memory_extra(model, plain, x), **reference,
                 "bf16": bf16}
        results[case] = compare(
            NAME, train_step(model, x), train_step(plain, x), case=case, target=target,
            label_ours=f"apply_checkpointing({policy!r})", label_peer="no checkpointing",
            extra=extra, **common,
        )  # fmt: skip
    results["selective_vs_full_T512"] = compare(
        NAME, train_step(models["selective"], x), train_step(models["blocks"], x),
        case="selective_vs_full_T512", label_ours="apply_checkpointing('selective')",
        label_peer="apply_checkpointing('blocks')", extra=shape, **common,
    )  # fmt: skip
    del models

    if support.native:
        small = TransformerStack(max(1, depth // 3), dim, HEADS).train()
        results["bf16_autocast_step"] = compare(
            NAME, train_step(small, x, "bf16"), train_step(small, x), case="bf16_autocast_step",
            label_ours='autocast_policy("bf16")', label_peer="float32",
            extra={**shape, "depth": max(1, depth // 3), "bf16": bf16}, **common,
        )  # fmt: skip
    else:
        results["bf16_autocast_step"] = {"skipped": bf16["skipped"], "bf16": bf16}
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = time_parser(__doc__, warmup=1, repeats=5)
    parser.add_argument("--depth", type=int, default=DEPTH)
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--seq", type=int, default=SEQ)
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parse_args(parser, argv)
    return run(
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        results_dir=args.results_dir,
        depth=args.depth,
        dim=args.dim,
        seq=args.seq,
        batch=args.batch,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
