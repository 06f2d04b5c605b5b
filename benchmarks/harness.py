"""Timing harness: ours vs a peer in one process, alternating; medians, ratios, JSON results.

Each benchmark file calls :func:`compare` (or :func:`time_one` when there is no peer) once
per case; results merge into ``benchmarks/results/<name>.json`` keyed by case, written
atomically. :func:`render_markdown_table` turns every results file into the README table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from netarchitect._io import atomic_write_text

__all__ = [
    "compare",
    "load_results",
    "parse_args",
    "render_markdown_table",
    "time_one",
    "time_parser",
]

Clock = Callable[[], float]
RESULTS_DIR = "benchmarks/results"


def time_parser(doc: str, *, warmup: int, repeats: int) -> argparse.ArgumentParser:
    """The options every timing benchmark takes (``--warmup``, ``--repeats``, ``--threads``,
    ``--results-dir``); described by the first line of the benchmark's ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-dir", default=RESULTS_DIR)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed; ``None`` (``run_all`` calling ``main()``) means the defaults, never
    ``sys.argv`` of whatever process imported the benchmark."""
    return parser.parse_args([] if argv is None else list(argv))


def cpu_info() -> dict[str, Any]:
    """The CPU model, ATen's CPU capability (``AVX2``, ``AVX512``, ...) and the 1-minute load
    average (ratios measured under load differ from those of an idle machine)."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:  # pragma: no cover - not Linux
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu_model": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_avg_1m": load}


def machine_info(threads: int) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        **cpu_info(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _stats(label: str, times: list[float]) -> dict[str, Any]:
    quartiles = (
        statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [0.0] * 3
    )
    q1, _, q3 = quartiles
    return {
        "label": label,
        "median_s": statistics.median(times),
        "iqr_s": q3 - q1,
        "min_s": min(times),
        "times_s": times,
    }


def _validate(warmup: int, repeats: int, threads: int) -> None:
    for name, value, least in (
        ("warmup", warmup, 0),
        ("repeats", repeats, 1),
        ("threads", threads, 1),
    ):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")


def _measure(
    fns: list[Callable[[], Any]], warmup: int, repeats: int, threads: int, clock: Clock
) -> list[list[float]]:
    """Run ``fns`` in turn ``warmup`` times untimed, then ``repeats`` times timed."""
    _validate(warmup, repeats, threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: list[list[float]] = [[] for _ in fns]
    try:
        for _ in range(warmup):
            for fn in fns:
                fn()
        for _ in range(repeats):
            for fn, bucket in zip(fns, times):
                start = clock()
                fn()
                bucket.append(clock() - start)
    finally:
        torch.set_num_threads(previous)
    return times


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to start afresh") from None


def save_case(name: str, case: str, entry: dict[str, Any], results_dir: str | Path) -> None:
    """Write (or rewrite) ``entry`` as case ``case`` of ``results_dir/name.json``: a caller that
    adds figures to an entry after :func:`compare` or :func:`time_one` recorded it saves it
    again with this."""
    path = Path(results_dir) / f"{name}.json"
    data = _read(path)
    data.update(benchmark=name, machine=entry["machine"])
    data.setdefault("cases", {})[case] = entry
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _print(name: str, case: str, entry: dict[str, Any], console: Console | None) -> None:
    table = Table(title=f"{name} [{case}]")
    for column in ("", "median", "IQR", "min"):
        table.add_column(column)
    for side in (entry["ours"], entry["peer"]):
        if side:
            stats = [fmt_seconds(side[k]) for k in ("median_s", "iqr_s", "min_s")]
            table.add_row(side["label"], *stats)
    if entry["ratio"] is not None:
        table.caption = f"ours / peer = {entry['ratio']:.2f}×"
    (console or Console()).print(table)


def _record(
    name: str, case: str, entry: dict[str, Any], results_dir: str | Path, console: Console | None
) -> dict[str, Any]:
    save_case(name, case, entry, results_dir)
    _print(name, case, entry, console)
    return entry


def compare(
    name: str,
    ours: Callable[[], Any],
    peer: Callable[[], Any],
    *,
    case: str = "default",
    warmup: int = 3,
    repeats: int = 20,
    threads: int = 2,
    results_dir: str | Path = RESULTS_DIR,
    extra: dict[str, Any] | None = None,
    label_ours: str = "netarchitect",
    label_peer: str = "peer",
    target: float | None = None,
    clock: Clock | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Time ``ours`` against ``peer`` (alternating, after warm-up) and record the case.

    Returns the case entry: ``ours``/``peer`` statistics (median, IQR, min, all times, in
    seconds), ``ratio`` = median ours / median peer, ``target`` (the ratio to stay under),
    ``extra`` and ``machine``.
    """
    clock = clock or time.perf_counter
    t_ours, t_peer = _measure([ours, peer], warmup, repeats, threads, clock)
    entry = {
        "case": case,
        "ours": _stats(label_ours, t_ours),
        "peer": _stats(label_peer, t_peer),
        "target": target,
        "warmup": warmup,
        "repeats": repeats,
        "extra": extra or {},
        "machine": machine_info(threads),
    }
    peer_median = entry["peer"]["median_s"]
    entry["ratio"] = entry["ours"]["median_s"] / peer_median if peer_median > 0 else None
    return _record(name, case, entry, results_dir, console)


def time_one(
    name: str,
    fn: Callable[[], Any],
    *,
    case: str = "default",
    warmup: int = 3,
    repeats: int = 20,
    threads: int = 2,
    results_dir: str | Path = RESULTS_DIR,
    extra: dict[str, Any] | None = None,
    label: str = "netarchitect",
    target: float | None = None,
    clock: Clock | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Time ``fn`` alone (no peer) and record the case with the process's peak RSS in MiB."""
    (times,) = _measure([fn], warmup, repeats, threads, clock or time.perf_counter)
    entry = {
        "case": case,
        "ours": _stats(label, times),
        "peer": None,
        "ratio": None,
        "target": target,
        "warmup": warmup,
        "repeats": repeats,
        "extra": extra or {},
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": machine_info(threads),
    }
    return _record(name, case, entry, results_dir, console)


def load_results(results_dir: str | Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """Every ``<name>.json`` in ``results_dir``, keyed by benchmark name."""
    folder = Path(results_dir)
    if not folder.is_dir():
        return {}
    return {p.stem: _read(p) for p in sorted(folder.glob("*.json"))}


def fmt_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale * 0.9995:
            return f"{seconds / scale:.2f} {unit}"
    return f"{seconds / 1e-9:.0f} ns"


def render_markdown_table(results_dir: str | Path = RESULTS_DIR) -> str:
    """The README performance table: one row per benchmark case."""
    lines = [
        "| benchmark | case | ours median | peer median | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, data in load_results(results_dir).items():
        for case, entry in sorted(data.get("cases", {}).items()):
            peer = entry.get("peer")
            ratio, target = entry.get("ratio"), entry.get("target")
            cells = [
                name,
                case,
                fmt_seconds(entry["ours"]["median_s"]),
                fmt_seconds(peer["median_s"]) if peer else "—",
                f"{ratio:.2f}×" if ratio is not None else "—",
                f"≤ {target:.2f}×" if target is not None else "—",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
