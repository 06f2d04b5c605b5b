"""The ``netarchitect`` command.

One top-level handler (:func:`main`) sorts every failure into two kinds:

- a user mistake (a :class:`~netarchitect.errors.NetArchitectError`, a bad option, a file
  that cannot be read or written, memory exhausted): one ``error: ...`` line on stderr,
  exit status 2, never a traceback;
- anything else is a bug in netarchitect: the traceback, then one line saying so, exit
  status 1.

Options naming files are checked while parsing (:func:`readable_file`,
:func:`writable_file`), before any work is done.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from . import __version__
from ._io import check_readable, check_writable, check_writable_dir
from .errors import NetArchitectError, SpecError

__all__ = [
    "UsageError",
    "build_parser",
    "main",
    "nonnegative_seed",
    "readable_file",
    "writable_dir",
    "writable_file",
]

Handler = Callable[[argparse.Namespace, Console], int]


class UsageError(NetArchitectError):
    """A malformed command line (unknown option, missing argument, bad value)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError` (one line, exit status 2)
    instead of a usage block and ``sys.exit``; its sub-parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _option_type(check: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` running ``check``; its NetArchitectError is the option's error."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except NetArchitectError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def readable_file(what: str, *, text: bool = True) -> Callable[[str], Path]:
    """argparse ``type=``: an existing readable file (UTF-8 text unless ``text=False``)."""
    return _option_type(lambda p: check_readable(p, what, text=text), what)


def writable_file(text: str) -> Path:
    """argparse ``type=``: a file that can be written (not a folder, not under a file)."""
    return _option_type(check_writable, "path")(text)


def writable_dir(text: str) -> Path:
    """argparse ``type=``: a folder that exists or can be created, and can be written in."""
    return _option_type(check_writable_dir, "directory")(text)


def nonnegative_seed(text: str) -> int:
    """argparse ``type=``: an integer seed in ``[0, 2**63)``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid seed {text[:40]!r}: expected an integer"
        ) from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed {value} is outside [0, 2**63)")
    return value


class _Stdout(Console):
    """The command's output console: a reader that went away (``| head``) ends the command
    with status 141 like other tools, not rich's status 1 (which here means a bug)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


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

    spec = load_spec(args.spec)
    shapes = infer_shapes(spec)
    out.print(
        f"{args.spec}: valid ({len(spec.nodes)} nodes, outputs "
        + ", ".join(f"{o} {tuple(shapes[o])}" for o in spec.outputs)
        + ")",
        highlight=False,
    )
    return 0


def node_table(model: object, title: str) -> Table:
    """Rich table of a Network's nodes: id, block, output shape, parameters. The total counts
    each parameter once (tied weights are listed under every node that uses them)."""
    table = Table(title=title)
    table.add_column("node")
    table.add_column("block")
    table.add_column("output shape")
    table.add_column("parameters", justify="right")
    for info in model.node_info():  # type: ignore[attr-defined]
        table.add_row(
            info.id,
            info.block,
            "(B, " + ", ".join(map(str, info.shape)) + ")",
            _fmt_int(info.num_params),
        )
    total = sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]
    table.add_section()
    table.add_row("total", "", "", _fmt_int(total))
    return table


def _cmd_build(args: argparse.Namespace, out: Console) -> int:
    from .network import build
    from .spec import spec_hash

    if args.save_weights and args.meta:
        raise SpecError("--save-weights needs real weights; drop --meta", path="--save-weights")
    device = "meta" if args.meta else "cpu"
    model = build(args.spec, device=device, seed=args.seed)
    if args.summary or not args.save_weights:
        out.print(node_table(model, f"{model.spec.name}  (spec {spec_hash(model.spec)[:12]})"))
    if args.save_weights:
        from .weights import save_weights

        save_weights(model, args.save_weights)
        out.print(f"weights written to {args.save_weights}", highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``netarchitect`` command."""
    parser = _Parser(
        prog="netarchitect", description="Design, build, measure and search neural networks."
    )
    parser.add_argument("--version", action="version", version=f"netarchitect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("blocks", help="list registered blocks")
    p.add_argument("pattern", nargs="?", default="*", help="glob over block names")
    p.set_defaults(handler=_cmd_blocks)

    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names")
    p.set_defaults(handler=_cmd_models)

    spec_file = readable_file("spec file")
    p = sub.add_parser("validate", help="check a spec and report every problem")
    p.add_argument("spec", type=spec_file, help="YAML or JSON spec file")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("build", help="build a spec and print its node table")
    p.add_argument("spec", type=spec_file, help="YAML or JSON spec file")
    p.add_argument(
        "--summary",
        action="store_true",
        help="print the node table (default when nothing else is asked)",
    )
    p.add_argument(
        "--seed", type=nonnegative_seed, default=0, help="initialisation seed (default 0)"
    )
    p.add_argument(
        "--meta", action="store_true", help="build on the meta device (no weights allocated)"
    )
    p.add_argument(
        "--save-weights",
        metavar="PATH",
        type=writable_file,
        help="write the initialised weights as safetensors",
    )
    p.set_defaults(handler=_cmd_build)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    from .analysis.explain_command import register as explain_commands
    from .cli_analysis import register as analysis_commands
    from .extend.commands import register as extend_commands
    from .optimize.commands import register as optimize_commands
    from .parallel.plan_command import register as plan_commands
    from .parallel.train_command import register as train_commands
    from .search.commands import register as search_commands

    return [analysis_commands, search_commands, optimize_commands, extend_commands,
            explain_commands, train_commands, plan_commands]


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _user_error_line(exc: BaseException) -> str:
    """The single ``error: ...`` line shown for a user mistake."""
    problems = getattr(exc, "problems", None)
    if problems and len(problems) > 1:
        return _one_line(f"error: {len(problems)} problems: " + "; ".join(str(p) for p in problems))
    if isinstance(exc, MemoryError):
        return "error: out of memory" + (f" ({_one_line(str(exc))})" if str(exc) else "")
    if isinstance(exc, OSError):
        return _one_line(f"error: {exc.filename}: {exc.strerror or exc}")
    return _one_line(f"error: {exc}")


def _is_user_error(exc: BaseException) -> bool:
    """NetArchitectError, memory exhausted, or an operating-system error about a named file."""
    if isinstance(exc, NetArchitectError | MemoryError):
        return True
    return isinstance(exc, OSError) and exc.filename is not None


def _run(argv: Sequence[str] | None) -> int:
    if not _EXTRA_COMMANDS:
        _EXTRA_COMMANDS.extend(_extra_commands())
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        raise UsageError(
            f"netarchitect: a command is required: {', '.join(commands.choices)} "
            "(netarchitect --help describes them)"
        )
    return int(args.handler(args, _Stdout(soft_wrap=True)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a bug, 2 a user mistake).

    ``--help`` and ``--version`` exit through ``SystemExit(0)`` as argparse does.
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:  # `netarchitect models | head`: the reader left
        try:  # keep the interpreter's final flush from failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except Exception as exc:  # noqa: BLE001 - the one place that sorts every failure
        if _is_user_error(exc):
            sys.stderr.write(_user_error_line(exc) + "\n")
            return 2
        traceback.print_exc(file=sys.stderr)
        sys.stderr.write(
            f"netarchitect {__version__}: internal error ({type(exc).__name__}): this is a bug in "
            "netarchitect, not in your input; please report it to the maintainers with the "
            "command line and the traceback above\n"
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
