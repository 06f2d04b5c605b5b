"""``netarchitect optimize``: prune, fuse, quantise and export a model; write the result.

``TARGET`` is a registered model name, a spec file, or a folder holding ``spec.yaml`` and
``weights.safetensors`` (what ``netarchitect design`` writes for each chosen model, e.g.
``RUN_DIR/models/trial_00012``; its run's task is then the default ``--data``). The steps
run in a fixed order — pruning, fine-tuning (with data), fusion, quantisation, export —
and ``--out`` receives, all at once (a folder written beside it and renamed at the end,
so a failure leaves nothing behind): ``spec.yaml`` when the result is still a spec, the
weights (``weights.safetensors``, or ``weights.int8.safetensors`` once quantised), the
exported program (``model.pt2`` or ``model.onnx``) and ``report.md``, a before/after
table of parameters, MACs, stored size, latency and validation accuracy.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from .._io import prepare_output_dir, publish_output_dir
from ..errors import NetArchitectError

__all__ = ["Measure", "OptimizeError", "load_target", "measure", "optimize_command", "register"]


class OptimizeError(NetArchitectError):
    """``netarchitect optimize`` cannot do what was asked (bad combination, unusable target)."""


@dataclass(frozen=True)
class Measure:
    """What one version of the model costs (``macs``/``accuracy`` None when unknown)."""

    params: int
    macs: int | None
    size_bytes: int
    latency_ms: float
    accuracy: float | None


def load_target(target: str, *, seed: int = 0) -> tuple[nn.Module, Path | None]:
    """The model named by ``target`` and, for a design-run model folder, its run folder."""
    path = Path(target)
    if path.is_dir():
        from ..network import build
        from ..weights import load_weights

        spec, weights = path / "spec.yaml", path / "weights.safetensors"
        if not spec.is_file():
            raise OptimizeError(f"{path}: a model folder must hold spec.yaml (not found)")
        model = build(spec, seed=seed)
        if weights.is_file():
            load_weights(model, weights)
        run_dir = path.parent.parent if path.parent.name == "models" else None
        return model, run_dir
    from ..cli_analysis import resolve_target

    model, _ = resolve_target(target, meta=False, seed=seed)
    return model, None


def _task(data: str | None, run_dir: Path | None) -> Any:
    """The data set for accuracy and fine-tuning: ``--data`` (a task name or ``.npz``),
    else the design run's task, else None."""
    from ..search.tasks import get_task, load_npz_task

    if data is not None:
        return load_npz_task(data) if data.endswith(".npz") else get_task(data)
    from ..search.config import RUN_FILE, RunConfig

    if run_dir is not None and (run_dir / RUN_FILE).is_file():
        return RunConfig.load(run_dir).load_task()
    return None


def _inputs(model: nn.Module, task: Any) -> tuple[torch.Tensor, ...]:
    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(spec, "inputs"):
        raise OptimizeError(f"{type(model).__name__} has no spec inputs to measure it with")
    from ..network import sample_inputs

    inputs = sample_inputs(spec, batch=1)
    if task is not None and tuple(inputs[0].shape[1:]) != task.input_shape:
        raise OptimizeError(
            f"the model takes inputs of shape {tuple(inputs[0].shape[1:])} but the data set "
            f"{task.name!r} has {task.input_shape}"
        )
    return inputs


def measure(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], task: Any, *, float_model: nn.Module
) -> Measure:
    """Parameters, forward MACs, stored bytes, median CPU latency (ms) and validation accuracy.

    MACs are counted on ``float_model``, the model before quantisation (int8 kernels do the
    same multiply-accumulates but have no formulas)."""
    from ..analysis import count_flops, count_params, latency
    from .quantization import quantized_linears, quantized_size_bytes

    quantized = bool(quantized_linears(model))
    with torch.no_grad():
        macs = count_flops(float_model, inputs).forward.macs
    accuracy = None
    if task is not None:
        from ..search.trainer import evaluate

        accuracy, _ = evaluate(model, task.x_val, task.y_val)
    timing = latency(model, inputs, warmup=2, repeats=10, backward=False).forward
    params = count_params(model).total if not quantized else _quantized_params(model)
    return Measure(params, macs, quantized_size_bytes(model), timing.median_ms, accuracy)


def _quantized_params(model: nn.Module) -> int:
    """Weights and biases of a quantised model, counted as the float model would count them."""
    from .quantization import quantized_linears

    quantized = quantized_linears(model)
    inside = {f"{name}." for name in quantized}
    total = sum(
        p.numel()
        for n, p in model.named_parameters()
        if not any(n.startswith(prefix) for prefix in inside)
    )
    for module in quantized.values():
        weight = module.weight() if callable(module.weight) else module.weight
        bias = module.bias() if callable(getattr(module, "bias", None)) else module.bias
        total += weight.numel() + (bias.numel() if bias is not None else 0)
    return total


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "bytes":
        from ..analysis._common import human_bytes

        return human_bytes(int(value))
    if kind == "ms":
        return f"{value:,.3f} ms" if value < 10 else f"{value:,.1f} ms"
    if kind == "acc":
        return f"{100 * value:.2f}%"
    return f"{int(value):,}"


ROWS = (("params", "params", "int"), ("MACs", "macs", "int"), ("size", "size_bytes", "bytes"),
        ("latency", "latency_ms", "ms"), ("val accuracy", "accuracy", "acc"))


def _rows(before: Measure, after: Measure) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, field, kind in ROWS:
        a, b = getattr(before, field), getattr(after, field)
        if kind == "acc":
            ratio = "—" if a is None or b is None else f"{100 * (b - a):+.2f} pts"
        else:
            ratio = "—" if a in (None, 0) or b is None else f"{b / a:.3f}×"
        rows.append((label, _fmt(a, kind), _fmt(b, kind), ratio))
    return rows


def _report(target: str, steps: list[str], rows: list[tuple[str, str, str, str]],
            files: list[str], notes: list[str]) -> str:
    lines = [f"# netarchitect optimize: {target}", "", "Steps: " + " → ".join(steps), "",
             "| metric | before | after | after / before |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files)]
    lines += ["", *[f"- {n}" for n in notes]] if notes else []
    threads = torch.get_num_threads()
    lines += ["", f"Latency: median CPU forward at batch 1, {threads} thread{'s' * (threads > 1)}."]
    return "\n".join(lines) + "\n"


def _finetune(model: nn.Module, task: Any, epochs: int, seed: int) -> None:
    from ..search.trainer import TrainConfig, train

    train(model, task, TrainConfig(epochs=epochs, seed=seed, warmup_epochs=0, patience=epochs))


def _check_args(args: argparse.Namespace) -> None:
    if not (args.prune or args.fuse or args.quantize or args.export):
        raise OptimizeError("nothing to do: give --prune, --fuse, --quantize and/or --export")
    if args.unstructured and args.prune is None:
        raise OptimizeError("--unstructured needs --prune AMOUNT")
    if args.finetune_epochs and args.prune is None:
        raise OptimizeError("--finetune-epochs applies after --prune")
    if args.quantize and args.export == "onnx":
        raise OptimizeError("--quantize with --export onnx: ONNX has no int8 matmul translation "
                            "here; use --export program, or export without --quantize")


def optimize_command(args: argparse.Namespace, console: Console) -> int:
    """Run the requested steps on the target and write ``--out``."""
    _check_args(args)
    model, run_dir = load_target(args.target, seed=args.seed)
    model.eval()
    task = _task(args.data, run_dir)
    if args.finetune_epochs and task is None:
        raise OptimizeError("--finetune-epochs needs --data (or a design run's model folder)")
    inputs = _inputs(model, task)
    tmp = prepare_output_dir(args.out)
    try:
        text = _optimize(model, inputs, task, args, tmp, console)
        publish_output_dir(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    console.print(text, highlight=False, markup=False)
    console.print(f"written to {args.out}", highlight=False)
    return 0


def _optimize(model: nn.Module, inputs: tuple[torch.Tensor, ...], task: Any,
              args: argparse.Namespace, tmp: Path, console: Console) -> str:
    from ..spec import save_spec
    from ..weights import save_weights

    before = measure(model, inputs, task, float_model=model)
    steps, notes, current = [], [], model
    if args.prune is not None:
        from .pruning import prune

        finetune = None
        if args.finetune_epochs:
            def finetune(m: nn.Module) -> None:
                _finetune(m, task, args.finetune_epochs, args.seed)
        result = prune(current, args.prune, structured=not args.unstructured,
                       criterion=args.criterion, example_inputs=inputs, finetune=finetune)
        current = result.model.eval()
        kind = "unstructured" if args.unstructured else "structured"
        steps.append(f"{kind} pruning {args.prune:g} ({args.criterion})")
        if args.finetune_epochs:
            steps.append(f"fine-tuning {args.finetune_epochs} epochs")
    if args.fuse:
        from .fusion import FusedModel, fuse

        current = fuse(current)
        steps.append("fusion (BatchNorm folded, Q/K/V merged, dropout dropped)")
        if isinstance(current, FusedModel):
            notes.append("some folds cannot be written as a spec: no spec.yaml "
                         f"({', '.join(sorted(current.unexpressed))})")
    float_model = current
    if args.quantize:
        from .quantization import quantize

        mode = "int8_dynamic" if args.quantize == "int8" else args.quantize
        backend = "torchao" if args.export else "auto"  # the legacy int8 kernels do not export
        current = quantize(current, mode, backend=backend)
        steps.append(f"quantisation {mode}" + (" (torchao, exportable)" if args.export else ""))
    after = measure(current, inputs, task, float_model=float_model)
    files = _write(current, inputs, args, tmp, quantized=bool(args.quantize),
                   save_spec=save_spec, save_weights=save_weights)
    text = _report(args.target, steps, _rows(before, after), files, notes)
    (tmp / "report.md").write_text(text, encoding="utf-8")
    files.append("report.md")
    _print_table(console, before, after)
    return text


def _write(model: nn.Module, inputs: tuple[torch.Tensor, ...], args: argparse.Namespace,
           tmp: Path, *, quantized: bool, save_spec: Any, save_weights: Any) -> list[str]:
    files = []
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "to_dict"):
        save_spec(spec, tmp / "spec.yaml")
        files.append("spec.yaml")
    if quantized:
        from .quantization import save_quantized

        save_quantized(model, tmp / "weights.int8.safetensors")
        files.append("weights.int8.safetensors")
    else:
        save_weights(model, tmp / "weights.safetensors")
        files.append("weights.safetensors")
    if args.export:
        files.append(_export(model, args.export, tmp))
    return files


def _export(model: nn.Module, kind: str, tmp: Path) -> str:
    """Export with a dynamic batch dimension (traced at batch 2: torch.export specialises
    sizes of 1)."""
    from ..network import sample_inputs
    from .export import export_onnx, export_program

    inputs = sample_inputs(model.spec, batch=2) if hasattr(model, "spec") else None
    if inputs is None:
        raise OptimizeError("--export needs a spec-built model (its inputs are the spec's)")
    batch = torch.export.Dim("batch", min=1, max=2**20)
    dynamic = (tuple({0: batch} for _ in inputs),)  # forward(*inputs): one varargs tuple
    if kind == "program":
        export_program(model, *inputs, path=tmp / "model.pt2", dynamic_shapes=dynamic)
        return "model.pt2"
    export_onnx(model, *inputs, path=tmp / "model.onnx", dynamic_shapes=dynamic)
    return "model.onnx"


def _print_table(console: Console, before: Measure, after: Measure) -> None:
    table = Table(title="before / after")
    for name in ("metric", "before", "after", "after / before"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for row in _rows(before, after):
        table.add_row(*row)
    console.print(table)


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid amount {text[:40]!r}: expected a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"amount {value:g} is outside [0, 1)")
    return value


def _epochs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid epochs {text[:40]!r}") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"epochs {value} is outside [0, 10000]")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``optimize`` sub-command."""
    from ..cli import nonnegative_seed, writable_dir
    from .pruning import CRITERIA

    p = sub.add_parser("optimize", help="prune, fuse, quantise and export a model")
    p.add_argument("target", help="registered model name, spec file, or a design-run model folder")
    p.add_argument("--prune", type=_amount, metavar="AMOUNT",
                   help="fraction of channels/heads (or weights, --unstructured) to remove")
    p.add_argument("--structured", action="store_true",
                   help="remove whole channels and heads (the default for --prune)")
    p.add_argument("--unstructured", action="store_true", help="zero single weights instead")
    p.add_argument("--criterion", choices=sorted(CRITERIA), default="l1",
                   help="importance criterion for pruning (default l1)")
    p.add_argument("--fuse", action="store_true",
                   help="fold BatchNorm, merge Q/K/V, drop dropout (inference)")
    p.add_argument("--quantize", choices=["int8", "int8_dynamic", "int8_weight_only"],
                   help="int8 quantisation of Linear layers")
    p.add_argument("--export", choices=["program", "onnx"], help="torch.export program or ONNX")
    p.add_argument("--data", metavar="TASK|NPZ",
                   help="data set for accuracy and fine-tuning (default: a design run's task)")
    p.add_argument("--finetune-epochs", type=_epochs, default=0,
                   help="epochs of fine-tuning after pruning (needs data)")
    p.add_argument("--seed", type=nonnegative_seed, default=0, help="seed (default 0)")
    p.add_argument("--out", type=writable_dir, required=True, help="new folder for the results")
    p.set_defaults(handler=optimize_command)
