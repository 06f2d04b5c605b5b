"""Run one function on N real ``torch.distributed`` processes (gloo on CPU) and collect results.

Used by the tests, the benchmarks and the planner's measurements. Each rank is a fresh
``spawn``-ed interpreter joined through a file store (no ports to race for), with one
intra-op thread. A rank that raises makes :func:`run_ranks` stop every other rank and
raise :class:`RankFailed` with that rank's traceback; a rank that hangs is stopped at the
deadline — nothing waits forever.
"""

from __future__ import annotations

import datetime
import os
import queue as queue_module
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp

__all__ = ["RankFailed", "run_ranks"]


class RankFailed(RuntimeError):
    """A rank raised (``rank`` and its ``traceback`` text attached) or the ranks timed out."""

    def __init__(self, message: str, rank: int | None = None, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.remote_traceback = remote_traceback


def _rank_main(
    rank: int,
    world_size: int,
    store_path: str,
    backend: str,
    timeout: float,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    try:
        dist.init_process_group(
            backend, init_method=f"file://{store_path}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        value = fn(rank, world_size, *args)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which re-raises
        # reported before the group is torn down, with the time it happened: the parent
        # names the first failure, not the peers' connection errors that follow it
        message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        results.put((rank, False, (time.time(), message)))
        return
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    results.put((rank, True, value))


def run_ranks(
    fn: Callable[..., Any],
    world_size: int = 2,
    *args: Any,
    timeout: float = 120.0,
    backend: str = "gloo",
) -> list[Any]:
    """``[fn(0, world_size, *args), ..., fn(world_size - 1, ...)]``, each in its own process.

    ``fn`` must be importable by name (a module-level function) and its arguments and
    result picklable. The process group is initialised before ``fn`` runs and destroyed
    after it returns. Raises :class:`RankFailed` naming the first rank that failed, or
    when ``timeout`` seconds pass (every rank is terminated either way).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="netarchitect-ranks-") as tmp:
        store = os.path.join(tmp, "store")
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(rank, world_size, store, backend, timeout, fn, args, results),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        for proc in procs:
            proc.start()
        try:
            return _collect(procs, results, world_size, timeout)
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(5)
                if proc.is_alive():  # pragma: no cover - terminate was ignored
                    proc.kill()
                    proc.join()


def _collect(procs: list[Any], results: Any, world_size: int, timeout: float) -> list[Any]:
    values: dict[int, Any] = {}
    deadline = time.monotonic() + timeout + 60.0  # start-up (imports) on top of the op timeout
    while len(values) < world_size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            missing = sorted(set(range(world_size)) - set(values))
            raise RankFailed(f"ranks {missing} did not finish within {timeout:.0f} s")
        try:
            rank, ok, value = results.get(timeout=min(remaining, 1.0))
        except queue_module.Empty:
            if _dead_ranks(procs, values):
                _raise_first_failure(procs, results, values, {})
            continue
        if not ok:
            _raise_first_failure(procs, results, values, {rank: value})
        values[rank] = value
    return [values[r] for r in range(world_size)]


def _dead_ranks(procs: list[Any], reported: dict[int, Any]) -> list[int]:
    return [r for r, p in enumerate(procs)
            if r not in reported and not p.is_alive() and p.exitcode not in (0, None)]


def _raise_first_failure(
    procs: list[Any], results: Any, values: dict[int, Any], failures: dict[int, Any]
) -> None:
    """Wait a moment for the other ranks' reports, then raise the root failure.

    A rank that died without a report (killed, ``os._exit``) is the root; otherwise the
    earliest reported exception (peers fail after it, on the broken connection).
    """
    grace = time.monotonic() + 3.0
    while time.monotonic() < grace and len(values) + len(failures) < len(procs):
        try:
            rank, ok, value = results.get(timeout=0.2)
        except queue_module.Empty:
            if all(not p.is_alive() for p in procs):
                break
            continue
        (values if ok else failures)[rank] = value
    dead = _dead_ranks(procs, {**values, **failures})
    if dead:
        rank = dead[0]
        raise RankFailed(f"rank {rank} died with exit code {procs[rank].exitcode}", rank)
    rank = min(failures, key=lambda r: failures[r][0])
    text = failures[rank][1]
    raise RankFailed(f"rank {rank} failed: {text.splitlines()[0]}", rank, text)
