"""Start ``N`` training ranks with ``torchrun`` and turn a failed rank into one error.

:func:`launch` runs ``python -m torch.distributed.run --standalone --nproc-per-node N
--max-restarts 0 -m netarchitect.parallel.train --config FILE``: torchrun stops every
rank as soon as one fails, and collectives time out after ``dist_timeout`` seconds, so a
crashed rank never leaves the others hanging. Each rank that raises writes its error to a
shared folder (:func:`rank_entry`); the launcher names the root failure — a rank that died
without a report (killed, ``os._exit``), else the earliest exception — as a
:class:`~netarchitect.parallel.errors.ParallelError` (user mistakes and dead ranks, exit
status 2) or a :class:`RankError` (a bug, with the rank's traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .errors import ParallelError

__all__ = ["ERROR_ENV", "RankError", "launch", "rank_entry", "torchrun_command"]

#: Folder where each failing rank writes ``rank<R>.json`` (set by :func:`launch`).
ERROR_ENV = "NETARCHITECT_TRAIN_ERRORS"
_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")
_TERMINATED = (-15,)  # stopped by torchrun after another rank failed


class RankError(RuntimeError):
    """A rank failed with an internal error; ``remote_traceback`` holds its traceback."""

    def __init__(self, message: str, rank: int, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.remote_traceback = remote_traceback


def torchrun_command(nproc: int, config: str | Path) -> list[str]:
    """The command line that starts ``nproc`` ranks of :mod:`netarchitect.parallel.train`."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "--max-restarts=0",
        "-m", "netarchitect.parallel.train", "--config", str(config),
    ]


def _warn_cores(nproc: int, console: Any) -> None:
    cores = os.cpu_count() or 1
    if nproc > cores:
        text = (
            f"warning: --nproc {nproc} is more than the {cores} CPU core(s) of this machine; "
            "ranks will compete for them (slower, same results)"
        )
        if console is not None:
            console.print(text, highlight=False, style="yellow")
        else:
            sys.stderr.write(text + "\n")


def launch(args: Any, console: Any = None) -> None:
    """Run ``args`` (a :class:`~netarchitect.parallel.train.TrainArgs`) on ``args.nproc``
    ranks under torchrun; return when all finished, raise naming the root failure."""
    _warn_cores(args.nproc, console)
    with tempfile.TemporaryDirectory(prefix="netarchitect-train-") as tmp:
        config, errors = Path(tmp) / "args.json", Path(tmp) / "errors"
        config.write_text(args.to_json(), encoding="utf-8")
        errors.mkdir()
        env = {**os.environ, ERROR_ENV: str(errors), "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.run(
            torchrun_command(args.nproc, config), env=env, stderr=subprocess.PIPE, text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise root_failure(proc.stderr, errors, proc.returncode)


def _reports(errors: Path) -> dict[int, dict[str, Any]]:
    reports = {}
    for path in errors.glob("rank*.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # pragma: no cover - a rank killed mid-write
            continue
        reports[int(report["rank"])] = report
    return reports


def root_failure(stderr: str, errors: Path, returncode: int) -> Exception:
    """The exception that names the root failure of a torchrun whose ranks failed."""
    reports = _reports(errors)
    exits = {int(r): int(c) for r, c in _FAILURE.findall(stderr)}
    dead = [r for r, c in sorted(exits.items()) if r not in reports and c not in _TERMINATED]
    if dead:
        rank, code = dead[0], exits[dead[0]]
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return ParallelError(
            f"rank {rank} {how} without an error; the other ranks were stopped "
            "(continue from the last checkpoint with --resume)"
        )
    if reports:
        rank = min(reports, key=lambda r: reports[r]["time"])
        report = reports[rank]
        if report["user"]:
            return ParallelError(f"rank {rank}: {report['message']}")
        sys.stderr.write(report["traceback"])
        return RankError(
            f"rank {rank} failed: {report['type']}: {report['message']}", rank, report["traceback"]
        )
    tail = "\n".join(stderr.strip().splitlines()[-20:])
    return RankError(f"torchrun failed with exit code {returncode}:\n{tail}", -1, stderr)


def _write_error(rank: int, exc: BaseException) -> None:
    from ..errors import NetArchitectError

    folder = os.environ.get(ERROR_ENV)
    if not folder:
        return
    report = {
        "rank": rank, "time": time.time(), "type": type(exc).__name__,
        "message": str(exc).strip().splitlines()[0] if str(exc).strip() else "",
        "user": isinstance(exc, NetArchitectError), "traceback": traceback.format_exc(),
    }
    tmp = Path(folder) / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(report), encoding="utf-8")
    tmp.rename(Path(folder) / f"rank{rank}.json")


def rank_entry(argv: list[str] | None = None) -> int:
    """One rank under torchrun: read the settings, train, report an exception to the
    launcher; exit status 0, 2 (a user mistake) or 1."""
    from rich.console import Console

    from ..errors import NetArchitectError
    from .train import TrainArgs, run_training

    parser = argparse.ArgumentParser(prog="netarchitect.parallel.train")
    parser.add_argument("--config", required=True, help="TrainArgs as JSON (written by launch)")
    ns = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        args = TrainArgs.from_json(Path(ns.config).read_text(encoding="utf-8"))
        run_training(args, Console(soft_wrap=True) if rank == 0 else None)
    except Exception as exc:  # noqa: BLE001 - reported to the launcher
        _write_error(rank, exc)
        if isinstance(exc, NetArchitectError):
            sys.stderr.write(f"rank {rank}: error: {exc}\n")
            return 2
        traceback.print_exc()
        return 1
    return 0
