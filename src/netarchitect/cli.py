"""The ``netarchitect`` command.

User mistakes (``NetArchitectError``) print one line per problem on stderr and
exit with status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import NetArchitectError, SpecError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace, Console], int]


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _cmd_blocks(args: argparse.Namespace, out: Console) -> int:
    from .registry import get_block, list_blocks

    table = Table(title="registered blocks")
    table.add_column("name")
    table.add_column("class")
    table.add_column("summary")
    for name in list_blocks(args.pattern):
        cls = get_block(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        table.add_row(name, cls.__name__, doc[0] if doc else "")
    out.print(table)
    return 0


def _cmd_models(args: argparse.Namespace, out: Console) -> int:
    from .registry import list_models

    names = list_models(args.pattern)
    for name in names:
        out.print(name, highlight=False)
    return 0


def _cmd_validate(args: argparse.Namespace, out: Console) -> int:
    from .network import infer_shapes
    from .spec import load_spec

    spec = load_spec(Path(args.spec))
    shapes = infer_shapes(spec)
    out.print(f"{args.spec}: valid ({len(spec.nodes)} nodes, outputs "
              + ", ".join(f"{o} {tuple(shapes[o])}" for o in spec.outputs) + ")", highlight=False)
    return 0


def node_table(model: object, title: str) -> Table:
    """Rich table of a Network's nodes: id, block, output shape, parameters."""
    table = Table(title=title)
    table.add_column("node")
    table.add_column("block")
    table.add_column("output shape")
    table.add_column("parameters", justify="right")
    total = 0
    for info in model.node_info():  # type: ignore[attr-defined]
        table.add_row(info.id, info.block, "(B, " + ", ".join(map(str, info.shape)) + ")", _fmt_int(info.num_params))
        total += info.num_params
    table.add_section()
    table.add_row("total", "", "", _fmt_int(total))
    return table


def _cmd_build(args: argparse.Namespace, out: Console) -> int:
    from .network import build
    from .spec import spec_hash

    device = "meta" if args.meta else "cpu"
    model = build(Path(args.spec), device=device, seed=args.seed)
    if args.summary or not args.save_weights:
        out.print(node_table(model, f"{model.spec.name}  (spec {spec_hash(model.spec)[:12]})"))
    if args.save_weights:
        if args.meta:
            raise SpecError("--save-weights needs real weights; drop --meta", path="--save-weights")
        from .weights import save_weights

        save_weights(model, args.save_weights)
        out.print(f"weights written to {args.save_weights}", highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``netarchitect`` command."""
    parser = argparse.ArgumentParser(prog="netarchitect", description="Design, build, measure and search neural networks.")
    parser.add_argument("--version", action="version", version=f"netarchitect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("blocks", help="list registered blocks")
    p.add_argument("pattern", nargs="?", default="*", help="glob over block names")
    p.set_defaults(handler=_cmd_blocks)

    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names")
    p.set_defaults(handler=_cmd_models)

    p = sub.add_parser("validate", help="check a spec and report every problem")
    p.add_argument("spec", help="YAML or JSON spec file")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("build", help="build a spec and print its node table")
    p.add_argument("spec", help="YAML or JSON spec file")
    p.add_argument("--summary", action="store_true", help="print the node table (default when nothing else is asked)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--meta", action="store_true", help="build on the meta device (no weights allocated)")
    p.add_argument("--save-weights", metavar="PATH", help="write the initialised weights as safetensors")
    p.set_defaults(handler=_cmd_build)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    from .cli_analysis import register as analysis_commands
    from .search.commands import register as search_commands

    return [analysis_commands, search_commands]


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    if not _EXTRA_COMMANDS:
        _EXTRA_COMMANDS.extend(_extra_commands())
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    out = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        return args.handler(args, out)
    except NetArchitectError as exc:
        problems = getattr(exc, "problems", None)
        if problems and len(problems) > 1:
            err.print(f"error: {len(problems)} problems", markup=False)
            for p in problems:
                err.print(f"  {p}", markup=False)
        else:
            err.print(f"error: {exc}", markup=False)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive
        err.print("interrupted", markup=False)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
