"""Analysis benchmark: a GPT-2-XL-shaped decoder on the meta device, and peer totals.

Run from the repository root::

    python -m benchmarks.bench_analysis [--peer-python /path/to/venv/bin/python]

Part 1 (ours): parameters + forward/backward FLOPs + training memory of a 48-layer,
1600-wide, 25-head decoder (vocab 50257, sequence 1024, tied head: 1,557,611,200
parameters) built on ``meta``. Targets: under 10 s and under 1 GiB resident memory.
The first analysis in a fresh process is timed on its own ("cold": it pays PyTorch's
one-off lazy imports), then repeated ("warm") with the timing harness.

Part 2 (peers): fvcore and ptflops cannot be installed next to this project's pinned
environment, so ``--peer-python`` names a separate interpreter that has them (and the
same torch). It is called with ``--peers-only`` (which imports nothing from
netarchitect) on the same plain-torch models, and its totals are compared with ours in
``benchmarks/results/analysis.json``; ``benchmarks/results/analysis.md`` explains every
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
# models (plain torch, shared by ours and the peers)
# ---------------------------------------------------------------------------


class DecoderBlock(nn.Module):
    """Pre-norm GPT block: causal SDPA attention and a 4x GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))


class Decoder(nn.Module):
    """GPT-2-shaped decoder with the output head tied to the token embedding."""

    def __init__(self, vocab: int, positions: int, layers: int, dim: int, heads: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(positions, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + skip)


class ResNetLike(nn.Module):
    """ResNet-18-style stem and two stages (conv, BN, ReLU, pooling, residual adds)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 7, 2, 3, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        self.stage1 = nn.Sequential(BasicBlock(32, 32, 1), BasicBlock(32, 32, 1))
        self.stage2 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage2(self.stage1(self.stem(x)))).flatten(1))


class AttentionModel(nn.Module):
    """nn.MultiheadAttention block + a functional SDPA block (what counters miss)."""

    def __init__(self, dim: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mha(x, x, x, need_weights=False)[0]
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, D)
        return x + self.proj(y.transpose(1, 2).reshape(b, t, d))


def peer_models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Plain-torch models and their input shape (batch included)."""
    torch.manual_seed(0)
    return {
        "resnet_like": (ResNetLike().eval(), (1, 3, 224, 224)),
        "mlp": (
            nn.Sequential(
                nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
            ).eval(),
            (32, 784),
        ),
        "attention": (AttentionModel().eval(), (2, 64, 128)),
    }


# ---------------------------------------------------------------------------
# peers (run in the peer interpreter; no netarchitect import)
# ---------------------------------------------------------------------------


def _fvcore(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return {
        "total": int(analysis.total()),
        "by_operator": {k: int(v) for k, v in analysis.by_operator().items()},
        "unsupported": {k: int(v) for k, v in analysis.unsupported_ops().items()},
    }


def _ptflops(model: nn.Module, x: torch.Tensor, backend: str) -> dict[str, Any]:
    from ptflops import get_model_complexity_info

    shape = tuple(x.shape[1:])
    macs, params = get_model_complexity_info(
        model,
        shape,
        as_strings=False,
        print_per_layer_stat=False,
        verbose=False,
        backend=backend,
        input_constructor=lambda _: x,
    )
    return {"macs": int(macs), "params": int(params)}


def peers_only() -> dict[str, Any]:
    import fvcore
    import ptflops

    results: dict[str, Any] = {
        "versions": {
            "fvcore": getattr(fvcore, "__version__", "?"),
            "ptflops": getattr(ptflops, "__version__", "?"),
            "torch": torch.__version__,
        }
    }
    for name, (model, shape) in peer_models().items():
        x = torch.randn(shape)
        entry: dict[str, Any] = {}
        for label, fn in (
            ("fvcore", partial(_fvcore, model, x)),
            ("ptflops_pytorch", partial(_ptflops, model, x, "pytorch")),
            ("ptflops_aten", partial(_ptflops, model, x, "aten")),
        ):
            try:
                with torch.no_grad():
                    entry[label] = fn()
            except Exception as err:  # noqa: BLE001 - a peer failing on a model is a result
                entry[label] = {"error": f"{type(err).__name__}: {err}"}
        results[name] = entry
    return results


# ---------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------

XL = {"vocab": 50257, "positions": 1024, "layers": 48, "dim": 1600, "heads": 25}


def analyse_xl(model: nn.Module, idx: torch.Tensor) -> dict[str, Any]:
    from netarchitect.analysis import count_flops, count_params, memory

    params = count_params(model)
    flops = count_flops(model, idx, backward=True)
    mem = memory(model, idx, optimizer="adamw")
    return {
        "params": params.total,
        "forward_macs": flops.forward.macs,
        "backward_macs": flops.backward.macs if flops.backward else None,
        "forward_other_flops": flops.forward.other_flops,
        "uncounted": flops.uncounted,
        "activation_bytes": mem.activations,
        "peak_training_bytes": mem.peak_training,
    }


def torch_flop_counter(model: nn.Module, inputs: torch.Tensor, backward: bool = False) -> int:
    """``torch.utils.flop_counter.FlopCounterMode`` total (FLOPs = 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = model(inputs)
        if backward:
            out.backward(torch.ones_like(out))
    return int(counter.get_total_flops())


def ours_on_peer_models() -> dict[str, Any]:
    from netarchitect.analysis import count_flops, count_params

    results = {}
    for name, (model, shape) in peer_models().items():
        x = torch.randn(shape)
        with torch.no_grad():
            r = count_flops(model, x)
            torch_macs = torch_flop_counter(model, x) // 2
        results[name] = {
            "macs": r.macs,
            "other_flops": r.other_flops,
            "params": count_params(model).total,
            "by_operator_macs": {k: v.macs for k, v in r.by_operator.items() if v.macs},
            "uncounted": r.uncounted,
            "torch_flop_counter_macs": torch_macs,
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", help="interpreter with fvcore and ptflops installed")
    parser.add_argument("--peers-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args([] if argv is None else argv)  # run_all calls main()
    if args.peers_only:
        print(json.dumps(peers_only()))
        return

    sys.path.insert(0, str(REPO))
    from benchmarks.harness import compare, time_one

    start = time.perf_counter()
    with torch.device("meta"):
        model = Decoder(**XL)
    build_s = time.perf_counter() - start
    idx = torch.zeros(1, XL["positions"], dtype=torch.long, device="meta")
    start, cpu_start = time.perf_counter(), time.process_time()
    figures = analyse_xl(model, idx)
    cold_s, cold_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]
    print(
        f"GPT-2-XL shape on meta: build {build_s:.2f} s, first analysis {cold_s:.2f} s wall "
        f"({cold_cpu_s:.2f} s CPU), peak RSS {rss_mib:.0f} MiB, load average {load:.1f}"
    )
    print(json.dumps(figures, indent=2))

    comparison: dict[str, Any] = {"ours": ours_on_peer_models()}
    if args.peer_python:
        completed = subprocess.run(
            [args.peer_python, str(Path(__file__).resolve()), "--peers-only"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        comparison["peers"] = json.loads(completed.stdout.strip().splitlines()[-1])
    for name, ours in comparison["ours"].items():
        peers = comparison.get("peers", {}).get(name, {})
        totals = {k: v.get("total", v.get("macs", v.get("error"))) for k, v in peers.items()}
        totals["torch_flop_counter"] = ours["torch_flop_counter_macs"]
        print(f"{name}: ours {ours['macs']:,} MACs; peers (MACs) {totals}")

    extra = {
        "model": XL,
        "figures": figures,
        "build_s": build_s,
        "cold_analysis_s": cold_s,
        "cold_analysis_cpu_s": cold_cpu_s,
        "rss_after_cold_mib": rss_mib,
        "load_average_1min": load,
        "target_s": 10.0,
        "target_rss_mib": 1024,
        "peer_comparison": comparison,
    }
    for case, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        time_one(
            "analysis",
            lambda: analyse_xl(model, idx),
            case=f"gpt2_xl_meta_params_flops_memory_{case}",
            warmup=0,
            repeats=args.repeats,
            threads=2,
            clock=clock,
            extra=extra,
        )
    from netarchitect.analysis import count_flops

    compare(
        "analysis",
        lambda: count_flops(model, idx, backward=True),
        lambda: torch_flop_counter(model, idx, backward=True),
        case="gpt2_xl_meta_flops_fwd_bwd_vs_torch_flop_counter",
        warmup=0,
        repeats=args.repeats,
        threads=2,
        label_peer="torch FlopCounterMode",
        extra={"note": "ours also attributes every op to modules and counts other FLOPs"},
    )


if __name__ == "__main__":
    main(sys.argv[1:])
