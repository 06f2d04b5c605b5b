"""Vision throughput: ResNet-50 and ViT-S/16 at 224×224, channels-last vs contiguous, and
against Hugging Face transformers' implementations of the same architectures.

For each model and pass (inference forward; training forward + backward) two cases run,
each alternating its two sides in one process (:func:`benchmarks.harness.compare`):

- ``{model}_{pass}_b{batch}``: ours channels-last vs ours contiguous (same weights);
- ``{model}_vs_hf_{pass}_b{batch}``: ours vs transformers' ``ResNetForImageClassification``
  / ``ViTForImageClassification`` built from configs of the same shape (parameter counts
  are checked to be equal; SDPA attention; both contiguous).

Results, with images/s, go to ``benchmarks/results/vision.json``.

    python -m benchmarks.bench_vision [--batch 4] [--repeats 7]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import netarchitect as na
from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser

MODELS = ("resnet50", "vit_s_16")


def hf_peer(name: str) -> nn.Module:
    """transformers' model of the same architecture (built from a config, random weights)."""
    import transformers

    if name == "resnet50":  # ResNetConfig's defaults are ResNet-50 v1.5
        return transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=1000))
    if name == "vit_s_16":
        config = transformers.ViTConfig(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            intermediate_size=1536,
            num_labels=1000,
            attn_implementation="sdpa",
        )
        return transformers.ViTForImageClassification(config)
    raise ValueError(f"no transformers peer for {name!r}")


class _Logits(nn.Module):
    """Unwraps a transformers output to its logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


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


def _hf_case(name: str, train: bool, batch: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(ours, transformers) steps on the same input; the two have equal parameter counts."""
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours = na.create_model(name, seed=0)
    peer = _Logits(hf_peer(name))
    n_ours, n_peer = (sum(p.numel() for p in m.parameters()) for m in (ours, peer))
    if n_ours != n_peer:
        raise RuntimeError(f"{name}: {n_ours:,} parameters here, {n_peer:,} in transformers")
    return _step(ours, x, train), _step(peer, x, train)


def run(
    models: Sequence[str] = MODELS,
    *,
    batch: int = 4,
    warmup: int = 2,
    repeats: int = 7,
    threads: int = 2,
    results_dir: str = RESULTS_DIR,
) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        for train in (False, True):
            pass_name = "fwd_bwd" if train else "fwd"
            extra = {"model": name, "pass": pass_name, "batch": batch, "resolution": 224}
            common = {
                "warmup": warmup,
                "repeats": repeats,
                "threads": threads,
                "results_dir": results_dir,
            }
            cases = (
                (f"{name}_{pass_name}_b{batch}", _case, "channels_last", "contiguous"),
                (f"{name}_vs_hf_{pass_name}_b{batch}", _hf_case, "netarchitect", "transformers"),
            )
            for case, make, label_ours, label_peer in cases:
                ours, peer = make(name, train, batch)
                entry = compare(
                    "vision",
                    ours,
                    peer,
                    case=case,
                    label_ours=label_ours,
                    label_peer=label_peer,
                    target=1.05 if make is _hf_case else None,  # parity, as in bench_layers
                    extra=extra,
                    **common,
                )
                rows.append(
                    {
                        "case": case,
                        "peer": label_peer,
                        "ours_img_s": batch / entry["ours"]["median_s"],
                        "peer_img_s": batch / entry["peer"]["median_s"],
                        "ratio": entry["ratio"],
                    }
                )
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = time_parser(__doc__, warmup=2, repeats=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parse_args(parser, argv)
    rows = run(
        args.models,
        batch=args.batch,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        results_dir=args.results_dir,
    )
    table = Table(title="images/s at 224×224 (median); ours is channels-last or netarchitect")
    for column in ("case", "peer", "ours img/s", "peer img/s", "time ratio (ours / peer)"):
        table.add_column(column, justify="left" if column in ("case", "peer") else "right")
    for r in rows:
        table.add_row(
            r["case"],
            r["peer"],
            f"{r['ours_img_s']:.2f}",
            f"{r['peer_img_s']:.2f}",
            f"{r['ratio']:.2f}",
        )
    Console().print(table)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
