"""``netarchitect explain MODEL|RUN_DIR --input file.npz --method ig --out DIR``.

Computes attributions (saliency, SmoothGrad, Integrated Gradients, Grad-CAM, Grad-CAM++ or
attention rollout) of a model's predictions on the samples ``x`` of an npz file and writes
``attributions.npz`` and PNG overlays into a new folder (see :mod:`.explain`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console

__all__ = ["METHODS", "explain_command", "register"]

#: The attribution methods (here, not in :mod:`.explain`, so the parser needs no torch).
METHODS = ("saliency", "smoothgrad", "ig", "gradcam", "gradcam++", "rollout")


def explain_command(args: argparse.Namespace, console: Console) -> int:
    """Load the model and inputs, compute, write ``--out``; nothing is written on error."""
    from .._io import prepare_output_dir
    from .explain import explain, load_explain_inputs, load_explain_model, write_explanation

    prepare_output_dir(args.out).rmdir()  # refuse a non-empty or unwritable --out up front
    model = load_explain_model(args.model, seed=args.seed)
    inputs = load_explain_inputs(args.input, model)
    result = explain(model, inputs, args.method, target=args.target, layer=args.layer,
                     steps=args.steps, baseline=args.baseline, head_fusion=args.head_fusion,
                     discard_ratio=args.discard_ratio)
    files = write_explanation(result, inputs, args.out)
    line = f"{args.method} attributions of {len(inputs.x)} sample(s) written to {args.out}"
    if result.delta is not None:
        line += f" (IG completeness gap: max {float(result.delta.abs().max()):.2e})"
    console.print(line, highlight=False)
    console.print(", ".join(files[:4]) + (" ..." if len(files) > 4 else ""), highlight=False)
    return 0


def _positive(name: str, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text[:40]!r}: expected an integer") from None
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} {value}: expected 1..{high}")
        return value

    return convert


def _class_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"target {text[:40]!r}: expected a class index") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"target {value}: expected a class index >= 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``explain`` sub-command."""
    from ..cli import nonnegative_seed, readable_file, writable_dir

    p = sub.add_parser("explain", help="attributions (saliency, IG, Grad-CAM, rollout) as "
                                       "PNG overlays and attributions.npz")
    p.add_argument("model", help="registered model name, spec file, model folder or design run")
    p.add_argument("--input", required=True, type=readable_file("input file", text=False),
                   help="npz with 'x' (N, ...) and optional 'y' (labels) and 'baseline'")
    p.add_argument("--method", required=True, choices=METHODS, help="attribution method")
    p.add_argument("--target", type=_class_index,
                   help="class to explain (default: 'y' if given, else the predicted class)")
    p.add_argument("--layer", help="Grad-CAM layer: a feature_info stage or module path "
                                   "(default: the last stage)")
    p.add_argument("--steps", type=_positive("steps", 4096), default=64,
                   help="Integrated Gradients steps (default 64)")
    p.add_argument("--baseline", type=float,
                   help="IG baseline value (default 0, or the file's 'baseline')")
    p.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean",
                   help="rollout: how heads are fused (default mean)")
    p.add_argument("--discard-ratio", type=float, default=0.9,
                   help="rollout: fraction of the weakest attention dropped per layer, in "
                        "[0, 1) (default 0.9)")
    p.add_argument("--seed", type=nonnegative_seed, default=0,
                   help="initialisation seed of a model without weights (default 0)")
    p.add_argument("--out", type=writable_dir, required=True, help="new folder for the results")
    p.set_defaults(handler=explain_command)
