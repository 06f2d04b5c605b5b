"""The ``netarchitect train`` sub-command (``register(subparsers)`` adds it to the CLI).

Everything heavy (torch.distributed, the data sets, the models) is imported inside the
handler, so the CLI starts fast. Bad values (unknown task, missing data file, ``--nproc
0``, a ``--tp`` that does not divide the model) are one ``error:`` line, exit status 2,
before any process starts or anything is written in ``--out``.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "train_command"]


def train_command(args: argparse.Namespace, console: Any) -> int:
    """Train, then print the result's one-line summary."""
    from .train import TrainArgs, train

    settings = TrainArgs(
        model=args.model, out=str(args.out), task=args.task,
        data=None if args.data is None else str(args.data), trial=args.trial,
        nproc=args.nproc, fsdp=args.fsdp, tp=args.tp, pp=args.pp,
        pp_schedule=args.pp_schedule,
        checkpointing=args.checkpointing, amp=args.amp, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup=args.warmup, clip=args.clip, accumulate=args.accumulate,
        label_smoothing=args.label_smoothing, seed=args.seed, resume=args.resume,
        checkpoint_every=args.checkpoint_every, keep=args.keep,
        dist_timeout=args.dist_timeout, device=args.device,
    )
    result = train(settings, console)
    console.print(
        f"trained {result['model']} on {result['task']}: {result['steps']} steps on "
        f"{result['world_size']} process(es); test {result['metric']} "
        f"{result['test_metric']:.4f}; outputs in {settings.out}",
        highlight=False,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``netarchitect train`` to the CLI."""
    from ..cli import nonnegative_seed, readable_file, writable_dir

    p = sub.add_parser(
        "train",
        help="train a spec, a registered model or a design run's model (1 or N processes)",
        description="Train with AdamW, warm-up + cosine, clipping and accumulation; resumable "
        "distributed checkpoints, metrics.jsonl and loss.png in --out. --nproc N runs N "
        "ranks under torchrun (gloo on CPU, nccl on GPUs).",
    )
    p.add_argument(
        "model", metavar="SPEC|MODEL|RUN_DIR",
        help="a spec file, a registered model name, a chosen-model folder (spec.yaml + "
        "weights.safetensors) or a design run directory (its best chosen model)",
    )
    p.add_argument("--task", help="built-in data set (default: the run's task, or digits)")
    p.add_argument("--data", metavar="FILE.npz", type=readable_file("data file", text=False),
                   help="your own data: an .npz with arrays X (N, ...) and y (N,)")
    p.add_argument("--trial", type=int, help="with a RUN_DIR: train this chosen trial")
    p.add_argument("--out", required=True, type=writable_dir,
                   help="output folder (new or empty, or the folder of a run to --resume)")
    p.add_argument("--nproc", type=int, default=1, help="processes (default 1)")
    p.add_argument("--fsdp", action="store_true", help="shard with FSDP2 instead of DDP")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default 1)")
    p.add_argument("--pp", type=int, default=1,
                   help="pipeline stages, one per process (default 1; --nproc must equal it): "
                   "cut at block boundaries balancing measured FLOPs")
    p.add_argument("--pp-schedule", choices=["1f1b", "gpipe"], default="1f1b",
                   help="pipeline schedule (default 1f1b)")
    p.add_argument("--checkpointing", action="store_true",
                   help="activation checkpointing of every block")
    p.add_argument("--amp", choices=["bf16"], help="bf16 autocast")
    p.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="global micro-batch over all ranks (default 64)")
    p.add_argument("--accumulate", type=int, default=1,
                   help="micro-batches per optimizer step (default 1)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW decay (default 1e-4)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up steps (default 10)")
    p.add_argument("--clip", type=float, default=1.0,
                   help="gradient-norm clip (default 1.0; 0 disables)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="(default 0)")
    p.add_argument("--seed", type=nonnegative_seed, default=0, help="seed (default 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --out")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="checkpoint every N optimizer steps (default 0: every epoch)")
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept (default 2)")
    p.add_argument("--dist-timeout", type=float, default=300.0,
                   help="seconds a collective waits for a rank before failing (default 300)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when available")
    p.set_defaults(handler=train_command)
