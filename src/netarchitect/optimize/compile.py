"""``torch.compile`` with validated arguments, and graph breaks made readable.

:func:`compile_model` is a thin wrapper over :func:`torch.compile` that rejects a bad
``mode``/``backend`` with a :class:`~netarchitect.errors.SpecError` naming the valid
choices (``torch.compile`` itself fails late, on the first call, with a deep traceback).
:func:`graph_breaks` runs a model once under TorchDynamo (:func:`torch._dynamo.explain`)
and returns every graph break as a :class:`GraphBreak`: the reason, the user source line
that caused it and its function; :func:`format_graph_breaks` prints them as a table.
"""

from __future__ import annotations

import linecache
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import SpecError, suggest

__all__ = [
    "GraphBreak",
    "compile_model",
    "compile_modes",
    "data_dependent_modules",
    "format_graph_breaks",
    "graph_breaks",
]

_LOCATION = re.compile(r"in user code at (?P<file>.+?):(?P<line>\d+)")
_FRAME = re.compile(r'File "(?P<file>.+?)", line (?P<line>\d+), in (?P<func>\S+)')
_REASON = re.compile(
    r"Graph Break Reason: (?P<reason>.*?)"
    r"(?:\n\s*\n(?:User code traceback|Stack variable source attribution):|\Z)",
    re.DOTALL,
)


def compile_modes() -> list[str]:
    """The ``mode=`` values the inductor backend accepts (``"default"``, ``"max-autotune"`` ...)."""
    import torch._inductor

    return sorted(torch._inductor.list_mode_options())


def _check_backend(backend: str | Callable[..., Any]) -> None:
    if callable(backend):
        return
    names = torch.compiler.list_backends(exclude_tags=())
    if not isinstance(backend, str) or backend not in names:
        raise SpecError(
            f"unknown torch.compile backend {backend!r}{suggest(str(backend), names)}; "
            f"choose one of {', '.join(torch.compiler.list_backends())} (or 'eager', "
            "'aot_eager' to debug)",
            path="backend",
        )


def _check_inductor_only(name: str, value: Any, backend: str | Callable[..., Any]) -> None:
    if backend != "inductor":
        raise SpecError(
            f"{name}={value!r} applies to the 'inductor' backend only, not {backend!r}", path=name
        )


def _check_options(options: dict[str, Any] | None, mode: str | None, backend: Any) -> None:
    if options is None:
        return
    _check_inductor_only("options", options, backend)
    if mode is not None:
        raise SpecError(f"give mode={mode!r} or options, not both", path="options")
    if not isinstance(options, dict):
        raise SpecError(
            f"options must be a dict of inductor settings, got {options!r}", path="options"
        )
    import torch._inductor.config as inductor_config

    known = inductor_config.get_config_copy()
    for key in options:
        if key not in known:
            raise SpecError(
                f"unknown inductor option {key!r}{suggest(str(key), known)}", path=f"options.{key}"
            )


def _check_mode(mode: str | None, backend: str | Callable[..., Any]) -> None:
    if mode is None:
        return
    _check_inductor_only("mode", mode, backend)
    modes = compile_modes()
    if mode not in modes:
        raise SpecError(
            f"unknown compile mode {mode!r}{suggest(str(mode), modes)}; choose one of "
            f"{', '.join(modes)} (or None)",
            path="mode",
        )


def compile_model(
    model: nn.Module | Callable[..., Any],
    *,
    mode: str | None = None,
    fullgraph: bool = True,
    dynamic: bool | None = None,
    backend: str | Callable[..., Any] = "inductor",
    options: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    """``torch.compile(model, mode=, fullgraph=, dynamic=, backend=, options=)`` after checking
    the arguments (a :class:`~netarchitect.errors.SpecError` names a bad one and the choices).

    ``options`` are inductor settings (``torch._inductor.config`` names, instead of ``mode``),
    e.g. ``{"layout_optimization": False}``: inductor otherwise converts convolutions to
    channels-last, which made ResNet-18 *training* 1.4× slower than eager on a 2-core AMD
    EPYC (AVX512) (``benchmarks/bench_optimize_compile.py``).

    ``fullgraph=True`` (the default here, unlike ``torch.compile``) makes a graph break an
    error on the first call instead of a silent slow-down; use :func:`graph_breaks` to list
    them all. ``dynamic=None`` lets Dynamo mark a dimension dynamic after it changes once
    (``True`` compiles shape-generic code up front, ``False`` recompiles for every shape).
    The compiled module shares its parameters with ``model`` and compiles on the first call.

    KV-cache decoding: pass the compiled model to :func:`netarchitect.generation.generate`
    with the default ``dynamic=None``. ``generate`` allocates a fixed-size cache, Dynamo
    compiles the prompt step, then marks the growing cache length dynamic after the second
    token: two graphs in all, no recompile per token, the same tokens as eager (tested).
    """
    if not callable(model):
        raise TypeError(
            f"compile_model needs an nn.Module or a callable, got {type(model).__name__}"
        )
    _check_backend(backend)
    _check_mode(mode, backend)
    _check_options(options, mode, backend)
    for name, value in (("fullgraph", fullgraph), ("dynamic", dynamic)):
        if not (isinstance(value, bool) or (name == "dynamic" and value is None)):
            allowed = "True or False" if name == "fullgraph" else "True, False or None"
            raise SpecError(f"{name}={value!r} must be {allowed}", path=name)
    return torch.compile(
        model, mode=mode, fullgraph=fullgraph, dynamic=dynamic, backend=backend, options=options
    )


@dataclass(frozen=True)
class GraphBreak:
    """One place where TorchDynamo stopped the graph and fell back to Python.

    ``reason`` is the short cause (Dynamo's break type and explanation), ``filename`` and
    ``lineno`` the user source line, ``function`` its function, ``code`` that line's text
    and ``detail`` Dynamo's full message (with hints and a link to its documentation).
    """

    reason: str
    filename: str
    lineno: int
    function: str = ""
    code: str = ""
    detail: str = ""

    @property
    def location(self) -> str:
        """``file.py:123``, the path relative to the working directory when shorter."""
        try:
            rel = os.path.relpath(self.filename)
        except ValueError:  # pragma: no cover - another drive on Windows
            rel = self.filename
        path = rel if len(rel) < len(self.filename) else self.filename
        return f"{path}:{self.lineno}"

    def __str__(self) -> str:
        where = f"{self.location} in {self.function}" if self.function else self.location
        code = f"  [{self.code}]" if self.code else ""
        return f"{where}: {self.reason}{code}"


def _summary(reason: str) -> str:
    """Dynamo's break type and its explanation, e.g. ``Dynamic shape operator: Operator
    `aten.nonzero.default`'s output shape depends on input Tensor data.``"""
    lines = [line.strip() for line in reason.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("Explanation:") and i > 0 and lines[i - 1]:
            return f"{lines[i - 1]}: {line.removeprefix('Explanation:').strip()}"
    return next((line for line in lines if line), "unknown reason")


def _parse(message: str) -> GraphBreak | None:
    """A :class:`GraphBreak` from one of Dynamo's ``graph_breaks`` log messages."""
    where = _LOCATION.search(message)
    if where is None:
        return None
    filename, lineno = where["file"], int(where["line"])
    found = _REASON.search(message)
    reason = found["reason"].strip() if found else ""
    frames = [f for f in _FRAME.finditer(message) if f["file"] == filename]
    function = frames[-1]["func"] if frames else ""
    code = linecache.getline(filename, lineno).strip()
    return GraphBreak(_summary(reason), filename, lineno, function, code, reason)


class _Collector(logging.Handler):
    """Keeps the graph-break messages Dynamo logs while :func:`graph_breaks` runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _collect(run: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run ``run`` with Dynamo's ``graph_breaks`` log captured (and kept off the console)."""
    from torch._dynamo import symbolic_convert

    log = symbolic_convert.graph_break_log
    collector = _Collector()
    saved = (log.level, log.propagate)
    log.addHandler(collector)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        return run(), collector.messages
    finally:
        log.removeHandler(collector)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def graph_breaks(
    model: nn.Module | Callable[..., Any], *inputs: Any, **kwargs: Any
) -> list[GraphBreak]:
    """Every graph break TorchDynamo meets when running ``model(*inputs, **kwargs)`` once.

    Dynamo's caches are reset first (so earlier compilations do not hide breaks) and after.
    Breaks are listed in the order met, one per source line (a break inside a loop makes
    Dynamo re-trace and skip the frame: that is reported once, with the first reason).
    An empty list means ``torch.compile(model, fullgraph=True)`` traces it as one graph.
    The model really runs (eagerly, between the captured graphs), so modules in training
    mode update their state as usual.

    The reasons come from Dynamo's ``graph_breaks`` log (the text ``TORCH_LOGS=graph_breaks``
    prints, captured here and kept off the console): unlike ``explain().break_reasons`` it
    also names breaks that made Dynamo skip a whole frame (a data-dependent op in a loop);
    ``explain``'s reasons fill in any break that was not logged.

    Example::

        for b in graph_breaks(model, x):
            print(b)   # layers/moe.py:202 in forward: Dynamic shape operator: ...
    """
    if not callable(model):
        raise TypeError(
            f"graph_breaks needs an nn.Module or a callable, got {type(model).__name__}"
        )
    torch._dynamo.reset()
    try:
        explained, messages = _collect(lambda: torch._dynamo.explain(model)(*inputs, **kwargs))
    finally:
        torch._dynamo.reset()
    found: dict[tuple[str, int], GraphBreak] = {}
    for message in messages:
        brk = _parse(message)
        if brk is not None:
            found.setdefault((brk.filename, brk.lineno), brk)
    for reason in explained.break_reasons:  # a break Dynamo compiled but did not log
        if reason.user_stack:
            frame = reason.user_stack[-1]
            key = (frame.filename, frame.lineno or 0)
            if key not in found:
                code = (frame.line or "").strip()
                brk = GraphBreak(
                    _summary(reason.reason), key[0], key[1], frame.name, code, reason.reason
                )
                found[key] = brk
    return list(found.values())


def format_graph_breaks(
    breaks: Sequence[GraphBreak], *, style: str = "table", width: int = 100
) -> str:
    """The breaks as a text table (``style="table"``: #, location, function, reason) or one
    line each (``style="lines"``, :meth:`GraphBreak.__str__`); ``"no graph breaks"`` if none.
    Table cells longer than ``width`` allows are cut with ``…``."""
    if style not in ("table", "lines"):
        raise SpecError(f"style={style!r} must be 'table' or 'lines'", path="style")
    if not breaks:
        return "no graph breaks"
    if style == "lines":
        return "\n".join(str(b) for b in breaks)
    rows = [("#", "location", "function", "reason")]
    rows += [(str(i), b.location, b.function, b.reason) for i, b in enumerate(breaks, start=1)]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    room = max(width - sum(widths) - 6, 20)  # what is left for the reason column
    lines = []
    for row in rows:
        reason = row[3].replace("\n", " ")
        reason = reason if len(reason) <= room else reason[: room - 1] + "…"
        cells = [row[c].ljust(widths[c]) for c in range(3)]
        lines.append("  ".join([*cells, reason]).rstrip())
    lines.insert(1, "-" * min(width, max(len(line) for line in lines)))
    return f"{len(breaks)} graph break{'s' if len(breaks) > 1 else ''}\n" + "\n".join(lines)


def data_dependent_modules(model: nn.Module) -> dict[str, str]:
    """Submodules (path -> reason) that declare ``data_dependent_control_flow``: their Python
    control flow depends on tensor values (e.g. adaptive ODE solvers), so they cannot be
    one graph — ``torch.compile`` breaks there and ``torch.export`` refuses them."""
    return {
        name: reason
        for name, m in model.named_modules()
        if isinstance(reason := getattr(type(m), "data_dependent_control_flow", None), str)
    }

