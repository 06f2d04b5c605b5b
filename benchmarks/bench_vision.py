"""Vision throughput: ResNet-50 and ViT-S/16 at 224×224, channels-last vs contiguous.

For each model and pass (inference forward; training forward + backward) the two memory
formats run alternately in one process (:func:`benchmarks.harness.compare`; "ours" is
channels-last, the "peer" the default contiguous layout). Results, with images/s, go to
``benchmarks/results/vision.json``.

    python -m benchmarks.bench_vision [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import netarchitect as na
from benchmarks.harness import compare

MODELS = ("resnet50", "vit_s_16")


def _step(model: nn.Module, x: torch.Tensor, train: bool) -> Callable[[], Any]:
    if not train:

        def forward() -> None:
            with torch.inference_mode():
                model.eval()(x)

        return forward

    def forward_backward() -> None:
        model.train()(x).float().logsumexp(1).mean().backward()
        model.zero_grad(set_to_none=True)

    return forward_backward


def _case(name: str, train: bool, batch: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(channels-last step, contiguous step) on identical weights and inputs."""
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    contiguous = na.create_model(name, seed=0)
    last = na.create_model(name, seed=0).to(memory_format=torch.channels_last)
    return (
        _step(last, x.to(memory_format=torch.channels_last), train),
        _step(contiguous, x, train),
    )


def run(
    models: Sequence[str] = MODELS,
    *,
    batch: int = 4,
    warmup: int = 1,
    repeats: int = 3,
    threads: int = 2,
) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        for train in (False, True):
            ours, peer = _case(name, train, batch)
            case = f"{name}_{'fwd_bwd' if train else 'fwd'}_b{batch}"
            entry = compare(
                "vision",
                ours,
                peer,
                case=case,
                warmup=warmup,
                repeats=repeats,
                threads=threads,
                label_ours="channels_last",
                label_peer="contiguous",
                extra={
                    "model": name,
                    "pass": "fwd+bwd" if train else "fwd",
                    "batch": batch,
                    "resolution": 224,
                },
            )
            rows.append(
                {
                    "case": case,
                    "channels_last_img_s": batch / entry["ours"]["median_s"],
                    "contiguous_img_s": batch / entry["peer"]["median_s"],
                    "ratio": entry["ratio"],
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args([] if argv is None else argv)  # run_all calls main()
    rows = run(
        args.models,
        batch=args.batch,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
    )
    table = Table(title="images/s at 224×224 (median)")
    for column in ("case", "channels_last", "contiguous", "time ratio (cl / contiguous)"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for r in rows:
        table.add_row(
            r["case"],
            f"{r['channels_last_img_s']:.2f}",
            f"{r['contiguous_img_s']:.2f}",
            f"{r['ratio']:.2f}",
        )
    Console().print(table)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
