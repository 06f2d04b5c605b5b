"""``netarchitect plan MODEL --gpus 64 --gpu-memory 80GB --seq-len 4096 --batch 1M-tokens``:
the parallel layouts that fit, ranked by estimated step time (see :mod:`.planner`)."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from .errors import ParallelError

__all__ = ["parse_bytes", "parse_tokens"]

_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_COUNT_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_NUMBER = r"(\d+(?:\.\d+)?)"


def parse_bytes(text: str, option: str = "--gpu-memory") -> int:
    """``"80GB"`` -> 80e9, ``"80GiB"`` -> 80 * 2**30 (decimal units are powers of 1000)."""
    match = re.fullmatch(_NUMBER + r"\s*([a-z]*)", text.strip().lower())
    if not match or match.group(2) not in _BYTE_UNITS or float(match.group(1)) <= 0:
        raise ParallelError(f"{option}: cannot read {text!r} as a size; expected e.g. 80GB or 80GiB")
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2)])


def parse_tokens(text: str, seq_len: int, option: str = "--batch") -> int:
    """Global batch in tokens: ``"1M-tokens"`` (K/M/G count 2**10/2**20/2**30, so LLaMA's
    "4M tokens" are 1024 sequences of 4096), ``"256-seqs"`` or ``"256"`` (sequences)."""
    match = re.fullmatch(_NUMBER + r"([kmg]?)(?:-?(tokens|seqs|sequences))?", text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise ParallelError(
            f"{option}: cannot read {text!r}; expected e.g. 1M-tokens, 4096-tokens or 256-seqs")
    count = float(match.group(1)) * _COUNT_UNITS[match.group(2)]
    if count != int(count):
        raise ParallelError(f"{option}: {text!r} is not a whole number")
    return int(count) if match.group(3) == "tokens" else int(count) * seq_len


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``netarchitect plan``."""
    p = sub.add_parser("plan", help="rank DP/ZeRO/FSDP x TP x PP layouts for a model and cluster")
    p.add_argument("model", help="registered model name (netarchitect models)")
    p.add_argument("--gpus", type=_positive(int), required=True, help="number of GPUs")
    p.add_argument("--gpu-memory", required=True, help="memory per GPU, e.g. 80GB or 80GiB")
    p.add_argument("--seq-len", type=_positive(int), required=True, help="tokens per sequence")
    p.add_argument("--batch", required=True, help="global batch: 1M-tokens, 256-seqs ...")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"],
                   help="training dtype (below fp32: mixed precision with fp32 master weights)")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adam", "sgd_momentum", "sgd"])
    p.add_argument("--checkpointing", action="store_true",
                   help="only layouts with activation checkpointing (default: both are tried)")
    p.add_argument("--gpus-per-node", type=_positive(int), default=8)
    p.add_argument("--gpu-tflops", type=_positive(float), default=312.0,
                   help="peak TFLOP/s per GPU in the training dtype (A100 bf16: 312)")
    p.add_argument("--efficiency", type=_positive(float), default=0.5,
                   help="fraction of the peak the compute reaches (default 0.5)")
    p.add_argument("--intra-node-gbps", type=_positive(float), default=150.0,
                   help="GB/s per GPU inside a node (NVLink)")
    p.add_argument("--inter-node-gbps", type=_positive(float), default=25.0,
                   help="GB/s per GPU between nodes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model argument, e.g. --set depth=80 (repeatable)")
    p.add_argument("--top", type=_positive(int), default=10, help="rows to show (default 10)")
    p.add_argument("--json", action="store_true", help="print every plan as JSON")
    p.set_defaults(handler=_cmd_plan)


def _overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParallelError(f"--set: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _profile(name: str, seq_len: int, dtype_name: str, overrides: dict[str, Any]) -> Any:
    import torch

    from ..factory import create_model
    from ..registry import get_model_builder
    from .memory_model import profile_model

    get_model_builder(name)  # an unknown name: RegistryError naming the close ones
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    try:
        model = create_model(name, device="meta", dtype=dtype, **overrides)
    except TypeError as exc:
        if not overrides:  # pragma: no cover - a bug, not an input
            raise
        raise ParallelError(f"--set: {name} does not take these arguments ({exc})") from None
    vocab = getattr(model, "vocab_size", None) or _vocab(model)
    if vocab is None:
        raise ParallelError(f"{name}: the planner takes token models (inputs are token ids)")

    def inputs(batch: int) -> Any:
        return torch.zeros(batch, seq_len, dtype=torch.long, device="meta")

    return profile_model(model, inputs, seq_len=seq_len, name=name)


def _vocab(model: Any) -> int | None:
    from torch import nn

    return next((m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)), None)


def _cmd_plan(args: argparse.Namespace, out: Any) -> int:
    from .planner import Hardware, Training, plan_training

    memory = parse_bytes(args.gpu_memory)
    tokens = parse_tokens(args.batch, args.seq_len)
    overrides = _overrides(args.set)
    started = time.perf_counter()
    profile = _profile(args.model, args.seq_len, args.dtype, overrides)
    hardware = Hardware(args.gpus, memory, args.gpus_per_node, args.gpu_tflops * 1e12,
                        args.efficiency, args.intra_node_gbps * 1e9, args.inter_node_gbps * 1e9)
    training = Training(args.seq_len, tokens, {"bf16": 2, "fp16": 2, "fp32": 4}[args.dtype],
                        args.optimizer, True if args.checkpointing else None)
    report = plan_training(profile, hardware, training)
    seconds = time.perf_counter() - started
    if args.json:
        out.print(report.to_json(indent=2), highlight=False, soft_wrap=True)
        return 0
    out.width = max(out.width, 132)  # ten columns; a narrow terminal wraps the lines instead
    out.print(_table(report, args.top))
    fits = len(report.feasible)
    out.print(f"{fits} of {len(report.plans)} layouts fit in {args.gpu_memory} per GPU "
              f"({len(report.rejected)} more cannot split the model or the batch); "
              f"planned in {seconds:.1f} s", highlight=False)
    if not fits:
        out.print("no layout fits: the rows above need the least memory", highlight=False)
    return 0


def _table(report: Any, top: int) -> Any:
    from rich.table import Table

    from ..analysis._common import human_bytes

    t = report.training
    table = Table(title=f"{report.model}: {report.num_params / 1e9:.2f} B parameters, "
                        f"{t.sequences} x {t.seq_len} tokens per step on {report.hardware.gpus} GPUs")
    for column in ("#", "layout", "micro-batch", "ckpt", "model states", "activations",
                   "buffers", "total", "step (s)", "comm/rank"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    for i, plan in enumerate(report.plans[:top], 1):
        mem = plan.memory
        states = mem["params"] + mem["grads"] + mem["optimizer"]
        table.add_row(
            str(i), plan.name, f"{plan.micro_batch} x {plan.micro_batches}",
            "yes" if plan.checkpointing else "no", human_bytes(states),
            human_bytes(mem["activations"]), human_bytes(mem["comm_buffers"] + mem["buffers"]),
            human_bytes(mem["total"]) + ("" if plan.fits else " (too big)"),
            f"{plan.step_time:.3g}", human_bytes(sum(plan.comm_bytes.values())),
        )
    return table
