"""The study loop: start worker processes (or run in-process) and show live progress.

``workers >= 1`` starts that many ``python -m netarchitect.search.worker``
processes and polls the storage
once a second for the progress line: trial k of n, the best validation
accuracy, the Pareto front size, rejected candidates and the ETA.
``workers == 0`` runs the worker in this process (library use and tests).
Ctrl-C stops the workers; re-running the same command continues the study.
Each worker process logs to its own new file, ``RUN_DIR/logs/worker-HOST-K.log``
(the first free ``K``, claimed atomically): a resumed run, a second ``design``
process on the same run directory and another machine sharing the directory
never write into one another's log.
"""

from __future__ import annotations

import itertools
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import BudgetError, NetArchitectError
from .config import RUN_FILE, RunConfig
from .objectives import Objective, pareto_front
from .pruning import fully_trained
from .scoring import SCORINGS, Scoring, get_scoring
from .worker import BUDGET_EXIT, load_worker_study, run_worker, trained

__all__ = ["SearchStatus", "run_search", "status_of"]


@dataclass(frozen=True)
class SearchStatus:
    """A snapshot of a study: trained trials, running, rejected, best accuracy, Pareto size."""

    done: int
    running: int
    rejected: int
    best_acc: float | None
    pareto: int
    scoring: Scoring = SCORINGS["classification"]  # how the best value is shown

    def describe(self) -> str:
        best = self.scoring.format(self.best_acc)
        return (
            f"best {best} · Pareto {self.pareto} · running {self.running} · "
            f"rejected {self.rejected}"
        )


def status_of(
    trials: Sequence[FrozenTrial],
    objectives: Sequence[Objective],
    scoring: Scoring = SCORINGS["classification"],
) -> SearchStatus:
    """Summarise ``trials`` for the progress display."""
    complete = [t for t in trials if fully_trained(t)]
    acc = next(i for i, o in enumerate(objectives) if o.name == "accuracy")
    front = pareto_front([t.values for t in complete], [o.direction for o in objectives])
    return SearchStatus(
        done=sum(trained(t) for t in trials),
        running=sum(t.state == TrialState.RUNNING for t in trials),
        rejected=sum(t.state == TrialState.FAIL and "rejected" in t.user_attrs for t in trials),
        best_acc=max((t.values[acc] for t in complete), default=None),
        pareto=len(front),
        scoring=scoring,
    )


class _Display:
    """A rich progress bar over trained trials, with the study status and an ETA."""

    def __init__(
        self, console: Console, config: RunConfig, start_done: int, scoring: Scoring
    ) -> None:
        self.config, self.start_done, self.t0 = config, start_done, time.monotonic()
        self.scoring = scoring
        self.objectives = config.parsed_objectives()
        self.progress = Progress(
            TextColumn("[bold]trial"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(
            "starting", total=config.trials, completed=start_done, eta="–"
        )

    def update(self, trials: Sequence[FrozenTrial]) -> SearchStatus:
        status = status_of(trials, self.objectives, self.scoring)
        new = status.done - self.start_done
        eta = "–"
        if new > 0:
            left = max(0, self.config.trials - status.done)
            eta = f"{left * (time.monotonic() - self.t0) / new:.0f}s"
        self.progress.update(
            self.task,
            completed=min(status.done, self.config.trials),
            description=status.describe(),
            eta=eta,
        )
        return status


def claim_log(folder: Path, prefix: str) -> tuple[Path, BinaryIO]:
    """Create ``folder/PREFIX-K.log`` for the first ``K`` no one has taken; returns it open."""
    folder.mkdir(parents=True, exist_ok=True)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    for k in itertools.count():
        path = folder / f"{prefix}-{host}-{k}.log"
        try:
            return path, path.open("xb")  # exclusive creation: one owner per name
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover


def _spawn(config: RunConfig, workers: int) -> list[tuple[subprocess.Popen, Path]]:
    out = []
    for _ in range(workers):
        log, fh = claim_log(Path(config.run_dir) / "logs", "worker")
        with fh:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "netarchitect.search.worker",
                    str(Path(config.run_dir) / RUN_FILE),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        out.append((proc, log))
    return out


def _worker_error(log: Path, code: int) -> NetArchitectError:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if errors:
        message = errors[-1][len("error: ") :]
        return BudgetError(message) if code == BUDGET_EXIT else NetArchitectError(message)
    tail = lines[-1] if lines else "no output"
    return NetArchitectError(f"search worker exited with status {code} ({tail}); see {log}")


def run_search(
    config: RunConfig, *, workers: int = 1, console: Console | None = None
) -> optuna.Study:
    """Run the study of ``config`` (saved in its run directory) to ``config.trials`` trials."""
    console = console or Console()
    study = load_worker_study(config)
    done = sum(trained(t) for t in study.get_trials(deepcopy=False))
    scoring = get_scoring(study.user_attrs.get("task_kind", "classification"))
    display = _Display(console, config, done, scoring)
    with display.progress:
        if workers == 0:
            run_worker(
                config, callbacks=[lambda s, _t: display.update(s.get_trials(deepcopy=False))]
            )
        else:
            _supervise(config, study, workers, display)
        display.update(study.get_trials(deepcopy=False))
    return study


def _supervise(config: RunConfig, study: optuna.Study, workers: int, display: _Display) -> None:
    procs = _spawn(config, workers)
    try:
        while any(p.poll() is None for p, _ in procs):
            display.update(study.get_trials(deepcopy=False))
            time.sleep(1.0)
    except KeyboardInterrupt:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            p.wait(timeout=30)
        raise
    failed = [(p.returncode, log) for p, log in procs if p.returncode != 0]
    if failed:
        raise _worker_error(failed[0][1], failed[0][0])
