"""The ``design`` and ``report`` sub-commands (``register(subparsers)`` adds them to the CLI).

Handlers take ``(args, console)`` and return an exit status; user mistakes
raise :class:`~netarchitect.errors.NetArchitectError` subclasses, which the
CLI prints as one line with exit status 2. Malformed option values (``--trials
abc``, a ``--space`` that is not a readable text file, an ``--out`` under a file)
are reported the same way, while parsing: one ``error:`` line, status 2.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from ..errors import NetArchitectError
from .objectives import SAMPLERS
from .proxies import PROXIES
from .scoring import Scoring, get_scoring

__all__ = ["design_command", "register", "report_command"]


def _one_line_error(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report bad options as a NetArchitectError (one ``error:`` line, status 2)
    also when it is not the CLI's own parser class."""

    def error(message: str) -> NoReturn:
        raise NetArchitectError(f"{parser.prog}: {message}")

    parser.error = error  # type: ignore[method-assign]


def _final_table(final: list[dict[str, Any]], scoring: Scoring) -> Table:
    metric = scoring.label
    table = Table(title=f"chosen models (Pareto front; test {metric} measured once)")
    columns = ("trial", f"val {metric}", f"test {metric}", "params", "MACs", "latency (ms)", "files")
    for name in columns:
        table.add_column(name, justify="left" if name == "files" else "right")
    for f in final:
        table.add_row(
            str(f["trial"]),
            scoring.format(f["val_acc"]),
            scoring.format(f["test_acc"]),
            f"{f['params']:,}",
            f"{f['macs']:,}",
            f"{f['latency_ms']:.3g}",
            f["dir"],
        )
    return table


def design_command(args: argparse.Namespace, console: Console) -> int:
    """``netarchitect design``: search, then print the chosen models and where the report is."""
    from .designer import design

    result = design(
        task=args.task,
        data=args.data,
        space=args.space,
        max_params=args.max_params,
        max_macs=args.max_macs,
        max_latency_ms=args.max_latency_ms,
        max_activation_mb=args.max_activation_mb,
        objectives=args.objectives,
        trials=args.trials,
        timeout=args.timeout,
        workers=args.workers,
        storage=args.storage,
        study=args.study,
        seed=args.seed,
        out=args.out,
        sampler=args.sampler,
        prune=not args.no_prune,
        proxy=args.proxy,
        console=console,
    )
    kind = result.study.user_attrs.get("task_kind", "classification")
    console.print(_final_table(result.final, get_scoring(kind)))
    console.print(f"report: {result.report}", highlight=False)
    return 0


def report_command(args: argparse.Namespace, console: Console) -> int:
    """``netarchitect report RUN_DIR``: re-render the report from the run's storage."""
    from .report import render_report

    path = render_report(args.run_dir)
    console.print(f"report: {path}", highlight=False)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``design`` and ``report`` sub-commands to an argparse ``subparsers`` object."""
    from ..cli import readable_file, writable_dir
    from .defaults import DEFAULT_MAX_PARAMS, DEFAULT_TRIALS

    p = subparsers.add_parser(
        "design",
        help="search architectures + training settings for a task and a budget",
        description="Multi-objective architecture and hyper-parameter search. With no arguments: "
        "digits, the packaged CNN/MLP space, <= 50k parameters, accuracy and MACs.",
    )
    p.add_argument(
        "--task",
        default="digits",
        help="built-in task: digits (default), moons, wine, breast_cancer (classification), "
        "diabetes (regression, R²), sbm and karate (graphs), digits-fewshot (5-way 5-shot "
        "episodes); --data takes your own",
    )
    p.add_argument(
        "--data",
        metavar="FILE.npz",
        type=readable_file("data file", text=False),
        help="your own data: an .npz with arrays X (N, ...) and y (N,)",
    )
    p.add_argument(
        "--space",
        metavar="SPACE.yaml",
        type=readable_file("space file"),
        help="search space file (default: the task's packaged space)",
    )
    p.add_argument(
        "--max-params",
        type=int,
        default=DEFAULT_MAX_PARAMS,
        help=f"parameter budget (default {DEFAULT_MAX_PARAMS:,})",
    )
    p.add_argument("--max-macs", type=int, help="MACs per sample budget")
    p.add_argument(
        "--max-latency-ms", type=float, help="latency budget in ms (batch 1, one thread)"
    )
    p.add_argument(
        "--max-activation-mb", type=float, help="training activation memory budget per sample (MiB)"
    )
    p.add_argument(
        "--objectives",
        default="accuracy,macs",
        help="comma-separated: accuracy plus any of params, macs, latency (default accuracy,macs)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help=f"trained trials in the study (default {DEFAULT_TRIALS}); re-running continues to it",
    )
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument(
        "--workers", type=int, help="worker processes (default: one per core, at most 4)"
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna RDB URL shared by workers on many machines, "
        "e.g. postgresql+psycopg://user:pw@host/db (default: a SQLite file in the run directory)",
    )
    p.add_argument(
        "--study", help="study name (default: the task name); also the run directory name"
    )
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed (default 0)")
    p.add_argument(
        "--out", default="runs", type=writable_dir, help="parent of the run directory (default runs/)"
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="auto",
        help="auto (TPE for one objective, NSGA-II for several), tpe, nsga2 or random",
    )
    p.add_argument(
        "--no-prune", action="store_true", help="train every feasible candidate to the end"
    )
    p.add_argument(
        "--proxy", choices=PROXIES, help="skip candidates whose zero-cost proxy is below the median"
    )
    p.set_defaults(handler=design_command)
    _one_line_error(p)

    p = subparsers.add_parser(
        "report", help="re-render the report of a search run from its storage"
    )
    p.add_argument("run_dir", help="run directory (contains run.json)")
    p.set_defaults(handler=report_command)
    _one_line_error(p)
