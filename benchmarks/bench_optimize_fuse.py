"""Inference fusion: fused vs eager forward latency (BatchNorm folding on ResNet-50; merged
Q/K/V and dropout removal on ViT-S/16), same weights, inference mode.

Each case alternates the fused model and the unfused eager model in one process
(:func:`benchmarks.harness.compare`); the target for ResNet-50 is a time ratio
(fused / eager) of at most 0.9. Parameter counts before and after fusion and the largest
output difference are recorded. Results go to ``benchmarks/results/optimize.json``.

    python -m benchmarks.bench_optimize_fuse [--batch 4] [--size 224] [--repeats 15]
        [--clock wall|cpu]

``--clock cpu`` times with ``time.process_time`` (CPU seconds of this process, all
threads): on a machine shared with other jobs it is not inflated by time spent
descheduled, so the ratio stays meaningful; the case name records the clock.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import netarchitect as na
from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect.optimize.fusion import fuse

NAME = "optimize"
MODELS = ("resnet50", "vit_s_16")
TARGETS = {"resnet50": 0.9}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(
    models: Sequence[str] = MODELS,
    *,
    batch: int = 4,
    size: int = 224,
    warmup: int = 3,
    repeats: int = 15,
    threads: int = 2,
    results_dir: str = RESULTS_DIR,
    clock: str = "wall",
) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        eager = na.create_model(name, seed=0, img_size=size).eval()
        fused = fuse(eager)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            diff = (fused(x) - eager(x)).abs().max().item()
        extra = {
            "model": name,
            "batch": batch,
            "resolution": size,
            "params_before": _params(eager),
            "params_after": _params(fused),
            "max_abs_diff": diff,
            "fused_class": type(fused).__name__,
            "clock": clock,
        }
        entry = compare(
            NAME,
            _forward(fused, x),
            _forward(eager, x),
            case=f"fuse_{name}_fwd_b{batch}_{size}" + ("" if clock == "wall" else f"_{clock}"),
            label_ours="fused",
            label_peer="eager",
            target=TARGETS.get(name),
            warmup=warmup,
            repeats=repeats,
            threads=threads,
            results_dir=results_dir,
            extra=extra,
            clock=CLOCKS[clock],
        )
        rows.append({**extra, "fused_s": entry["ours"]["median_s"],
                     "eager_s": entry["peer"]["median_s"], "ratio": entry["ratio"],
                     "target": TARGETS.get(name)})
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = time_parser(__doc__, warmup=3, repeats=15)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parse_args(parser, argv)
    rows = run(args.models, batch=args.batch, size=args.size, warmup=args.warmup,
               repeats=args.repeats, threads=args.threads, results_dir=args.results_dir,
               clock=args.clock)
    table = Table(title=f"inference fusion: fused vs eager (median forward, {args.clock} clock)")
    for column in ("model", "params before", "params after", "fused ms", "eager ms",
                   "ratio", "target", "max |diff|"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['params_before']:,}", f"{r['params_after']:,}",
                      f"{r['fused_s'] * 1e3:.1f}", f"{r['eager_s'] * 1e3:.1f}",
                      f"{r['ratio']:.3f}", "-" if r["target"] is None else f"<= {r['target']}",
                      f"{r['max_abs_diff']:.1e}")
    Console().print(table)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
