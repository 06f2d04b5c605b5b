"""``netarchitect extend``: model surgery and LoRA from the command line; write the result.

``--lora`` leaves only the adapters trainable, plus a new ``--head`` and what
``--unfreeze`` names (as PEFT's ``modules_to_save``).

``TARGET`` is a registered model name, a spec file or a model folder (``spec.yaml`` and
``weights.safetensors``); ``--weights`` loads other weights first. The edits run in a
fixed order — ``--remove``, ``--swap``, ``--resize-vocab``, ``--head``, ``--freeze``,
``--unfreeze``, ``--lora`` — and ``--out`` receives, all at once (a hidden folder renamed
at the end, so a failure leaves nothing): ``spec.yaml`` (the edited architecture),
``weights.safetensors`` (its weights, without adapters), ``adapters.safetensors`` (with
``--lora``) and ``summary.json`` (the steps and the trainable-parameter table, which is
also printed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from ..errors import NetArchitectError

__all__ = ["ExtendError", "extend_command", "register"]

MAX_RANK = 65536


class ExtendError(NetArchitectError):
    """``netarchitect extend`` cannot do what was asked."""


def _check_args(args: argparse.Namespace) -> None:
    edits = (args.remove, args.swap, args.resize_vocab is not None, args.head is not None,
             args.freeze, args.unfreeze, args.lora)
    if not any(edits):
        raise ExtendError("nothing to do: give --head, --freeze, --unfreeze, --remove, --swap, "
                          "--resize-vocab and/or --lora")
    lora_only = {"--rank": args.rank, "--alpha": args.alpha, "--lora-dropout": args.lora_dropout,
                 "--dora": args.dora or None, "--rslora": args.rslora or None}
    for option, value in lora_only.items():
        if value is not None and not args.lora:
            raise ExtendError(f"{option} applies to --lora GLOB (not given)")


def _swap_pair(text: str) -> tuple[str, str]:
    source, sep, target = text.partition("=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(
            f"invalid swap {text[:40]!r}: expected FROM=TO layer names, e.g. batchnorm2d=groupnorm")
    return source, target


def _bounded_int(name: str, low: int, high: int) -> Any:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} {text[:40]!r}: expected an "
                                             "integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} {value} is outside [{low}, {high}]")
        return value

    convert.__name__ = name
    return convert


def _number(name: str, low: float, high: float, *, open_low: bool = False) -> Any:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} {text[:40]!r}: expected a "
                                             "number") from None
        if not (low < value if open_low else low <= value) or not value < high:
            bracket = "(" if open_low else "["
            raise argparse.ArgumentTypeError(
                f"{name} {value:g} is outside {bracket}{low:g}, {high:g})")
        return value

    convert.__name__ = name
    return convert


def _edit(model: nn.Module, args: argparse.Namespace) -> tuple[nn.Module, list[str]]:
    """The structural edits and freezing, in their fixed order."""
    from .embeddings import resize_token_embeddings
    from .freezing import freeze, unfreeze
    from .heads import replace_head
    from .layers_edit import remove_layers
    from .swap import swap_modules

    steps = []
    if args.remove:
        model = remove_layers(model, args.remove)
        steps.append(f"removed {', '.join(args.remove)}")
    for source, target in args.swap or ():
        model = swap_modules(model, source, target)
        steps.append(f"swapped {source} -> {target}")
    if args.resize_vocab is not None:
        model = resize_token_embeddings(model, args.resize_vocab, seed=args.seed)
        steps.append(f"vocabulary resized to {args.resize_vocab}")
    if args.head is not None:
        model = replace_head(model, args.head, seed=args.seed)
        steps.append(f"new {args.head}-way head")
    if args.freeze:
        names = freeze(model, args.freeze)
        steps.append(f"froze {len(names)} tensors ({', '.join(args.freeze)})")
    if args.unfreeze:
        names = unfreeze(model, args.unfreeze)
        steps.append(f"unfroze {len(names)} tensors ({', '.join(args.unfreeze)})")
    return model, steps


def _head_names(model: Any) -> list[str]:
    """Parameters of a spec-built classifier's head (kept trainable next to adapters)."""
    prefix = f"nodes.{model.spec.outputs[0]}."
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


def _lora(
    model: nn.Module, args: argparse.Namespace, tmp: Path
) -> tuple[list[str], dict[str, Any]]:
    extend: Any = importlib.import_module("netarchitect.extend")
    from .freezing import unfreeze

    missing = [n for n in ("apply_lora", "save_adapters") if not hasattr(extend, n)]
    if missing:  # pragma: no cover - extend-lora's module is part of the package
        raise ExtendError(f"--lora needs netarchitect.extend.{missing[0]}, not available here")
    options: dict[str, Any] = {"rank": args.rank or 8}
    if args.alpha is not None:
        options["alpha"] = args.alpha
    if args.lora_dropout is not None:
        options["dropout"] = args.lora_dropout
    if args.dora:
        options["dora"] = True
    if args.rslora:
        options["rslora"] = True
    head = _head_names(model) if args.head else []
    adapted = extend.apply_lora(model, list(args.lora), **options)  # freezes all but adapters
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad_(True)  # a new head must learn next to the adapters
    if args.unfreeze:
        unfreeze(model, args.unfreeze)  # trained next to the adapters too
    extend.save_adapters(model, tmp / "adapters.safetensors")
    info = {"targets": list(args.lora), "adapted": adapted, **options}
    return [f"LoRA rank {options['rank']} on {len(adapted)} modules"], info


def extend_command(args: argparse.Namespace, console: Console) -> int:
    """Run the requested edits on the target and write ``--out``."""
    from .._io import prepare_output_dir, publish_output_dir
    from ..optimize.commands import load_target
    from ..spec import save_spec, spec_hash
    from ..weights import load_weights, save_weights
    from .freezing import trainable_summary

    _check_args(args)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ExtendError(f"--out {args.out}: exists and is not an empty folder; choose a new one")
    model: Any
    model, _ = load_target(args.target, seed=args.seed)
    if args.weights is not None:
        load_weights(model, args.weights)
    model, steps = _edit(model, args)
    tmp = prepare_output_dir(args.out)
    try:
        files = []
        if hasattr(getattr(model, "spec", None), "to_dict"):
            save_spec(model.spec, tmp / "spec.yaml")
            files.append("spec.yaml")
        save_weights(model, tmp / "weights.safetensors")
        files.append("weights.safetensors")
        lora_info = None
        if args.lora:
            more, lora_info = _lora(model, args, tmp)
            steps += more
            files.append("adapters.safetensors")
        summary = trainable_summary(model)
        data = {"target": args.target, "steps": steps, "files": [*files, "summary.json"],
                "parameters": summary.to_dict()}
        if "spec.yaml" in files:
            data["spec_hash"] = spec_hash(model.spec)
        if lora_info is not None:
            data["lora"] = lora_info
        (tmp / "summary.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        publish_output_dir(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    console.print(summary.table(f"{args.target}: " + "; ".join(steps)))
    console.print(f"written to {args.out}", highlight=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``extend`` sub-command."""
    from ..cli import nonnegative_seed, readable_file, writable_dir

    p = sub.add_parser("extend", help="replace the head, freeze, prune layers, swap layers, "
                                      "resize the vocabulary, add LoRA adapters")
    p.add_argument("target", help="registered model name, spec file, or a model folder")
    p.add_argument("--weights", type=readable_file("weights file", text=False),
                   help="safetensors weights to load first")
    p.add_argument("--head", type=_bounded_int("head", 0, 2**31 - 1), metavar="N",
                   help="new classifier with N classes (0: none, return features)")
    p.add_argument("--freeze", action="append", metavar="GLOB",
                   help="freeze the parameters matching GLOB (repeatable)")
    p.add_argument("--unfreeze", action="append", metavar="GLOB",
                   help="unfreeze the parameters matching GLOB (repeatable; after --freeze, "
                        "and after --lora, which freezes all but the adapters and a new head)")
    p.add_argument("--remove", action="append", metavar="GLOB",
                   help="remove the layers (node ids / module paths) matching GLOB")
    p.add_argument("--swap", action="append", type=_swap_pair, metavar="FROM=TO",
                   help="swap every FROM layer for TO (e.g. batchnorm2d=groupnorm, gelu=silu)")
    p.add_argument("--resize-vocab", type=_bounded_int("vocabulary", 1, 2**31 - 1),
                   metavar="N", help="resize the token embeddings (tied heads stay tied)")
    p.add_argument("--lora", action="append", metavar="GLOB",
                   help="add LoRA adapters to the modules matching GLOB (repeatable)")
    p.add_argument("--rank", type=_bounded_int("rank", 1, MAX_RANK), help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=_number("alpha", 0.0, float("inf"), open_low=True),
                   help="LoRA alpha (default: the rank)")
    p.add_argument("--lora-dropout", type=_number("dropout", 0.0, 1.0), help="LoRA dropout")
    p.add_argument("--dora", action="store_true", help="DoRA (magnitude and direction)")
    p.add_argument("--rslora", action="store_true", help="rank-stabilised scaling alpha/sqrt(r)")
    p.add_argument("--seed", type=nonnegative_seed, default=0, help="seed (default 0)")
    p.add_argument("--out", type=writable_dir, required=True, help="new folder for the results")
    p.set_defaults(handler=extend_command)
