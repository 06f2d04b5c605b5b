"""Structured pruning: ResNet-18 at 224 pruned by 50% of its channels, against the unpruned
model and against Torch-Pruning 1.6 (DepGraph, ``MagnitudePruner`` with L1 importance at
the same ratio), and the 7 coupling patterns run without hints by both tools.

Cases (each alternates its two sides in one process, :func:`benchmarks.harness.compare`):

- ``resnet18_prune50_vs_unpruned_b{batch}``: inference latency, pruned / unpruned
  (target <= 0.45; MACs fall about 4x);
- ``resnet18_prune50_vs_torch_pruning_b{batch}``: our pruned model / Torch-Pruning's
  (target <= 1.0); both parameter counts are recorded and checked to be equal;
- ``coupling_patterns``: the time to prune all 7 patterns here, and which patterns each
  tool prunes (a pattern succeeds when pruning runs, the model is smaller, its output
  shape is unchanged, and — for attention — it has fewer heads).

Torch-Pruning gets only what it needs to run: example inputs and the classifier layer to
ignore (ours keeps network outputs by itself); model outputs that are not tensors are
unwrapped to logits for it. Results go to ``benchmarks/results/optimize.json``.

    python -m benchmarks.bench_optimize_prune [--batch 1] [--repeats 10]
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import netarchitect as na
from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_one, time_parser
from netarchitect.optimize.pruning import prune
from netarchitect.registry import model_example

NAME = "optimize"


# ---------------------------------------------------------------------------- patterns


class _ResidualAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(self.bn(self.conv(y)) + y)
        return self.head(y.mean((2, 3)))


class _Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pwl = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pwl(torch.relu(self.dw(self.pw(x)))).mean((2, 3)))


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.out = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.out(torch.relu(self.grouped(self.conv(x)))).mean((2, 3)))


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.fuse = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        return self.head(self.fuse(y).mean((2, 3)))


class _ConcatGrouped(nn.Module):
    """Branches of 12 and 20 channels concatenated into a 3x3 convolution with 4 groups of
    8 input channels (the groups straddle the concatenation)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 12, 1)
        self.b = nn.Conv2d(3, 20, 3, padding=1)
        self.fuse = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        return self.head(self.fuse(y).mean((2, 3)))


class _TorchMHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.attn(x, x, x, need_weights=False)[0])


class _Logits(nn.Module):
    """Unwraps a model output to its logits tensor (what Torch-Pruning's tracer needs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> torch.Tensor:
        out = self.model(*args)
        return getattr(out, "logits", out)


def _registry(name: str, **overrides: Any) -> tuple[nn.Module, tuple[Any, ...]]:
    ex = model_example(name)
    return na.create_model(name, seed=0, **{**ex.kwargs, **overrides}).eval(), ex.inputs


def _plain(cls: Callable[[], nn.Module], *shape: int) -> Callable[[], tuple[nn.Module, tuple]]:
    def make() -> tuple[nn.Module, tuple[Any, ...]]:
        torch.manual_seed(0)
        return cls().eval(), (torch.randn(*shape),)

    return make


#: pattern -> [(variant, factory)], each factory giving (model, example inputs)
PATTERNS: dict[str, list[tuple[str, Callable[[], tuple[nn.Module, tuple]]]]] = {
    "residual_add": [("plain", _plain(_ResidualAdd, 2, 3, 16, 16))],
    "depthwise_conv": [("plain", _plain(_Depthwise, 2, 3, 16, 16))],
    "grouped_conv": [("plain", _plain(_Grouped, 2, 3, 16, 16))],
    "concatenation": [("plain", _plain(_Concat, 2, 3, 16, 16))],
    "concat_into_grouped_conv": [("plain", _plain(_ConcatGrouped, 2, 3, 16, 16))],
    "attention_heads": [
        ("netarchitect_gpt2", lambda: _registry("gpt2")),
        ("nn.MultiheadAttention", _plain(_TorchMHA, 2, 5, 32)),
    ],
    "gqa_moe": [("netarchitect_moe_gqa", lambda: _registry("moe-decoder-s"))],
}


def _heads(model: nn.Module) -> int:
    """Total attention heads (ours: key/value groups and query heads; torch's MHA too)."""
    total = 0
    for m in model.modules():
        if isinstance(getattr(m, "num_heads", None), int):
            total += m.num_heads + getattr(m, "num_kv_heads", 0)
    return total


def _moe_hidden(model: nn.Module) -> int:
    return sum(
        m.gate_proj.out_features for n, m in model.named_modules() if ".experts." in n
        and hasattr(m, "gate_proj")
    )


def _outcome(before: nn.Module, after: nn.Module, inputs: tuple, pattern: str) -> str:
    """``"ok"`` or why the pruned model does not count as a success."""
    with torch.no_grad():
        ref, out = _Logits(before)(*inputs), _Logits(after)(*inputs)
    if out.shape != ref.shape:
        return f"output shape {tuple(out.shape)} != {tuple(ref.shape)}"
    n0, n1 = (sum(p.numel() for p in m.parameters()) for m in (before, after))
    if n1 >= n0:
        return "not smaller"
    if pattern in ("attention_heads", "gqa_moe") and _heads(after) >= _heads(before):
        return "heads not pruned"
    if pattern == "gqa_moe" and _moe_hidden(after) >= _moe_hidden(before):
        return "experts not pruned"
    return "ok"


def _ours(model: nn.Module, inputs: tuple, amount: float = 0.5) -> nn.Module:
    return prune(model, amount, example_inputs=inputs).model


def _classifier(model: nn.Module) -> list[nn.Module]:
    """The last linear layer (network output), which Torch-Pruning must be told to keep."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def _torch_pruning(model: nn.Module, inputs: tuple, amount: float = 0.5) -> nn.Module:
    import torch_pruning as tp

    model = _Logits(copy.deepcopy(model))
    pruner = tp.pruner.MagnitudePruner(
        model,
        inputs if len(inputs) > 1 else inputs[0],
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=_classifier(model),
    )
    pruner.step()
    return model


def _try(fn: Callable[[], nn.Module], before: nn.Module, inputs: tuple, pattern: str) -> str:
    try:
        return _outcome(before, fn(), inputs, pattern)
    except Exception as exc:  # noqa: BLE001 (a tool's failure is a result here)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def coupling_patterns() -> dict[str, dict[str, Any]]:
    """Per pattern: each variant's outcome for us and for Torch-Pruning, and the verdicts."""
    table: dict[str, dict[str, Any]] = {}
    for pattern, variants in PATTERNS.items():
        row: dict[str, Any] = {"variants": {}}
        for variant, make in variants:
            model, inputs = make()
            tools = {"netarchitect": _ours, "torch_pruning": _torch_pruning}
            row["variants"][variant] = {
                tool: _try(functools.partial(fn, model, inputs), model, inputs, pattern)
                for tool, fn in tools.items()
            }
        for tool in ("netarchitect", "torch_pruning"):
            row[tool] = all(v[tool] == "ok" for v in row["variants"].values())
        table[pattern] = row
    return table


# ---------------------------------------------------------------------------- ResNet-18


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    from netarchitect.analysis import count_flops

    with torch.no_grad():
        return count_flops(model, x).forward.macs


def run(
    *,
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    threads: int = 2,
    amount: float = 0.5,
    results_dir: str = RESULTS_DIR,
) -> list[dict[str, Any]]:
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    dense = na.create_model("resnet18", seed=0).eval()
    ours = prune(dense, amount, example_inputs=x[:1]).model.eval()
    peer = _torch_pruning(dense, (x[:1],), amount).eval()
    counts = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in (("unpruned", dense), ("netarchitect", ours), ("torch_pruning", peer))
    }
    macs = {name: _macs(m, x[:1]) for name, m in (("unpruned", dense), ("netarchitect", ours),
                                                  ("torch_pruning", peer))}
    if counts["netarchitect"] != counts["torch_pruning"]:
        raise RuntimeError(f"parameter counts differ: {counts}")
    extra = {"model": "resnet18", "resolution": 224, "batch": batch, "amount": amount,
             "params": counts, "macs": macs}
    common = {"warmup": warmup, "repeats": repeats, "threads": threads, "results_dir": results_dir}
    rows = [
        compare(NAME, _forward(ours, x), _forward(dense, x),
                case=f"resnet18_prune50_vs_unpruned_b{batch}", extra=extra,
                label_ours="pruned", label_peer="unpruned", target=0.45, **common),
        compare(NAME, _forward(ours, x), _forward(peer, x),
                case=f"resnet18_prune50_vs_torch_pruning_b{batch}", extra=extra,
                label_ours="netarchitect", label_peer="torch_pruning", target=1.0, **common),
    ]
    patterns = coupling_patterns()
    summary = {t: sum(r[t] for r in patterns.values()) for t in ("netarchitect", "torch_pruning")}

    def prune_all() -> None:
        for variants in PATTERNS.values():
            for _, make in variants:
                model, inputs = make()
                _ours(model, inputs)

    rows.append(time_one(NAME, prune_all, case="coupling_patterns", warmup=0, repeats=1,
                         threads=threads, results_dir=results_dir,
                         extra={"patterns": patterns, "succeeded": summary, "of": len(patterns)}))
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = time_parser(__doc__, warmup=3, repeats=10)
    parser.add_argument("--batch", type=int, default=1)
    args = parse_args(parser, argv)
    rows = run(batch=args.batch, warmup=args.warmup, repeats=args.repeats, threads=args.threads,
               results_dir=args.results_dir)
    table = Table(title="structured pruning (time ratio: ours / peer, medians)")
    for column in ("case", "ratio", "target"):
        table.add_column(column)
    for r in rows[:2]:
        table.add_row(r["case"], f"{r['ratio']:.3f}", f"{r['target']}")
    console = Console()
    console.print(table)
    patterns = Table(title="coupling patterns pruned without hints")
    for column in ("pattern", "netarchitect", "torch_pruning"):
        patterns.add_column(column)
    for name, row in rows[2]["extra"]["patterns"].items():
        cells = [" / ".join(f"{k}: {v[tool]}" for k, v in row["variants"].items())
                 for tool in ("netarchitect", "torch_pruning")]
        patterns.add_row(name, *cells)
    console.print(patterns)
    console.print(f"params: {rows[0]['extra']['params']}  MACs: {rows[0]['extra']['macs']}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
