"""torch.compile (inductor) vs eager: forward + backward of a Transformer block and ResNet-18.

``python -m benchmarks.bench_optimize_compile``; results go to
``benchmarks/results/optimize.json``. Each model is compiled with
:func:`netarchitect.optimize.compile.compile_model` (``fullgraph=True``, default mode) and
warmed up (the compile time, tens of seconds on 2 cores, is recorded, not timed), then the
compiled and eager training steps alternate. Cases and target ratios (compiled / eager):

* ``compile_transformer_block``: ``TransformerBlock(256, 8)``, pre-norm, B=4, T=128 — ≤ 0.85;
* ``compile_resnet18``: ``create_model("resnet18")`` in training mode, B=4, 112×112 — ≤ 0.85,
  compiled with ``options={"layout_optimization": False}``: inductor's default conversion of
  convolutions to channels-last made this training step 1.39-1.49× *slower* than eager on
  a 2-core AMD EPYC (ATen capability AVX512, 2 threads); without it the ratio was 0.86-0.95
  in the same session.

What compiling can win here is bounded: in the eager block step the matrix products take
72% of the time and attention 13% (``torch.profiler``, 2 threads) — kernels inductor calls
as they are — so fusing the remaining ~15% (GELU, layer norms, adds) cannot reach 0.85; on
an idle machine both ratios were ≈ 0.97 (``mode="max-autotune-no-cudagraphs"``: 1.0).

The machine is shared: with 2 threads, time slices lost to other processes stall OpenMP
barriers, and single steps varied 10× under load. Compare ratios of one run only, and
read them with ``load_avg_1m`` (recorded with every case).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import netarchitect as na
from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect.layers.transformer import TransformerBlock
from netarchitect.optimize.compile import compile_model

NAME = "optimize"
TARGET = 0.85
#: Keep inductor from converting convolutions to channels-last (slower to train on CPU here).
RESNET_OPTIONS = {"layout_optimization": False}


def train_step(
    call: Callable[[Tensor], Tensor], params: list[nn.Parameter], x: Tensor
) -> Callable[[], None]:
    """One forward + backward of ``call(x).sum()`` with fresh gradients."""

    def step() -> None:
        for p in params:
            p.grad = None
        call(x).sum().backward()

    return step


def _case(
    case: str,
    module: nn.Module,
    x: Tensor,
    backend: str,
    common: dict[str, Any],
    extra: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    params = list(module.parameters())
    compiled = compile_model(module, backend=backend, options=options)
    start = time.perf_counter()
    train_step(compiled, params, x)()  # compiles forward and backward
    compile_s = time.perf_counter() - start
    return compare(
        NAME,
        train_step(compiled, params, x),
        train_step(module, params, x),
        case=case,
        target=TARGET,
        label_ours=f"torch.compile ({backend})",
        label_peer="eager",
        extra={
            **extra,
            "backend": backend,
            "options": options or {},
            "compile_s": compile_s,
            "pass": "forward+backward",
        },
        **common,
    )


def run(
    *,
    warmup: int,
    repeats: int,
    threads: int,
    results_dir: str = RESULTS_DIR,
    backend: str = "inductor",
    dim: int = 256,
    heads: int = 8,
    seq_len: int = 128,
    batch: int = 4,
    img_size: int = 112,
) -> dict[str, Any]:
    """Both cases; the sizes and ``backend`` are parameters so a test can run them tiny."""
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the compile and warm-up calls too
    common = {"warmup": warmup, "repeats": repeats, "threads": threads, "results_dir": results_dir}
    results = {}
    try:
        block = TransformerBlock(dim, heads)
        x = torch.randn(batch, seq_len, dim, requires_grad=True)
        results["compile_transformer_block"] = _case(
            "compile_transformer_block",
            block,
            x,
            backend,
            common,
            {"B": batch, "T": seq_len, "dim": dim, "heads": heads},
        )
        resnet = na.create_model("resnet18", seed=0).train()
        images = torch.randn(batch, 3, img_size, img_size)
        results["compile_resnet18"] = _case(
            "compile_resnet18",
            resnet,
            images,
            backend,
            common,
            {"B": batch, "img_size": img_size, "mode": "train"},
            options=RESNET_OPTIONS if backend == "inductor" else None,
        )
    finally:
        torch.set_num_threads(previous)
        torch._dynamo.reset()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = time_parser(__doc__, warmup=3, repeats=15)
    parser.add_argument("--backend", default="inductor")
    args = parse_args(parser, argv)
    return run(
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        results_dir=args.results_dir,
        backend=args.backend,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
