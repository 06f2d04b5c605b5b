"""``design()``: the whole job — task, space and budget in, chosen models and a report out.

With no arguments it searches the embedded default: scikit-learn's digits,
the packaged CNN/MLP space (``default_space.yaml``), at most 50k parameters,
objectives validation accuracy and MACs, :data:`DEFAULT_TRIALS` trained trials
(sized to finish in under five minutes on two cores). Every user mistake is
found before anything but the log (``RUN_DIR/design.log``) is written: bad
options, an unusable data file, an invalid space, an empty feasible region,
an unreachable storage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from rich.console import Console

from ..errors import BudgetError, NetArchitectError, SpecError
from .config import RunConfig
from .constraints import Budget, find_feasible
from .defaults import DEFAULT_MAX_PARAMS, DEFAULT_TRIALS
from .expand import FirstTrial
from .final import finalize
from .objectives import SAMPLERS, parse_objectives
from .proxies import PROXIES
from .report import render_report
from .runner import run_search
from .space import SearchSpace
from .storage import create_or_load_study, default_url, open_storage, safe_url
from .tasks import SearchTask, get_task, list_tasks

__all__ = ["DEFAULT_MAX_PARAMS", "DEFAULT_TRIALS", "DesignResult", "default_workers", "design"]

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
log = logging.getLogger("netarchitect.search")


@dataclass
class DesignResult:
    """Where the run lives, its study, and the chosen models (with their test accuracy)."""

    run_dir: Path
    study: optuna.Study
    final: list[dict[str, Any]]
    report: Path


def default_workers() -> int:
    """One worker per core, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


def _check_options(
    trials: int,
    timeout: float | None,
    workers: int,
    seed: int,
    sampler: str,
    proxy: str | None,
    study: str,
) -> None:
    problems = []
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        problems.append(f"--trials must be a positive integer, got {trials!r}")
    if timeout is not None and not timeout > 0:
        problems.append(f"--timeout must be > 0 seconds, got {timeout!r}")
    if workers < 0:
        problems.append(f"--workers must be >= 0, got {workers}")
    if seed < 0:
        problems.append(f"--seed must be >= 0, got {seed}")
    if sampler not in SAMPLERS:
        problems.append(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if proxy is not None and proxy not in PROXIES:
        problems.append(f"--proxy must be one of {', '.join(PROXIES)}, got {proxy!r}")
    if not _STUDY_NAME.match(study):
        problems.append(
            f"--study {study!r} must be letters, digits, '_', '.', '-' (it names a directory)"
        )
    if problems:
        raise NetArchitectError(problems[0])


def _open_log(run_dir: Path) -> logging.Handler:
    """Append to ``RUN_DIR/design.log``; each line names the host and process that wrote it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "design.log", encoding="utf-8")
    except OSError as exc:
        raise NetArchitectError(
            f"--out: cannot write the run directory {run_dir}: {exc.strerror or exc}"
        ) from None
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {socket.gethostname()}:{os.getpid()} %(message)s"
        )
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def prepare_run(
    config: RunConfig, console: Console | None = None
) -> tuple[SearchTask, SearchSpace, optuna.Study]:
    """Check the task, space and budget, then create (or load) the study and save ``run.json``.

    Everything that can be wrong with the user's input fails here, before any
    storage or file other than the log is written.
    """
    task = config.load_task()
    space = config.load_space(task)
    budget = config.parsed_budget()
    if console is not None:
        console.print(
            f"[bold]task[/] {task.describe()}; budget {budget.describe()}; "
            f"{len(space.dimensions)} search dimensions",
            highlight=False,
        )
    if config.proxy and task.proxy_inputs(1, torch.Generator()) is None:
        raise NetArchitectError(
            f"--proxy {config.proxy}: zero-cost proxies need plain input batches, which the "
            f"{task.name} task does not have; drop --proxy"
        )
    find_feasible(space, budget, seed=config.seed, inputs=task.cost_inputs())
    try:
        task.check_model(space.sample(FirstTrial()))
    except SpecError as exc:
        raise SpecError(
            f"{config.space_path(task).name} does not fit the data ({task.describe()}): {exc}"
        ) from None
    space_text = config.space_path(task).read_text(encoding="utf-8")
    study = create_or_load_study(
        open_storage(config.storage),
        config.study,
        config.directions,
        attrs={
            "objectives": ",".join(config.objectives),
            "space_hash": hashlib.sha256(space_text.encode()).hexdigest()[:16],
            "task": task.name,
        },
    )
    study.set_user_attr("task_description", task.describe())
    study.set_user_attr("task_kind", getattr(task, "kind", "classification"))
    study.set_user_attr("budget_description", budget.describe())
    study.set_user_attr("space_dimensions", space.describe())
    config.save()
    return task, space, study


def design(
    *,
    task: str = "digits",
    data: str | Path | None = None,
    space: str | Path | None = None,
    max_params: int | None = DEFAULT_MAX_PARAMS,
    max_macs: int | None = None,
    max_latency_ms: float | None = None,
    max_activation_mb: float | None = None,
    objectives: str | list[str] = "accuracy,macs",
    trials: int = DEFAULT_TRIALS,
    timeout: float | None = None,
    workers: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    seed: int = 0,
    out: str | Path = "runs",
    sampler: str = "auto",
    prune: bool = True,
    proxy: str | None = None,
    console: Console | None = None,
    heartbeat_interval: int = 2,
    grace_period: int = 10,
) -> DesignResult:
    """Search architectures and training settings for a task under a budget; see the module doc."""
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = default_workers() if workers is None else workers
    if not data and task not in list_tasks():
        get_task(task)  # the unknown task's one-line error, before the study name is derived
    study = study or (Path(data).stem if data else task)
    _check_options(trials, timeout, workers, seed, sampler, proxy, study)
    objs = parse_objectives(objectives)
    if max_activation_mb is not None and not max_activation_mb > 0:
        raise BudgetError(
            f"max-activation-mb must be > 0, got {max_activation_mb!r}: no network fits"
        )
    act = None if max_activation_mb is None else int(max_activation_mb * 2**20)
    budget = Budget(max_params, max_macs, act, max_latency_ms)
    run_dir = Path(out) / study
    handler = _open_log(run_dir)
    try:
        log.info(
            "design: task=%s data=%s space=%s budget=%s objectives=%s trials=%d workers=%d",
            task,
            data,
            space,
            budget.describe(),
            [o.name for o in objs],
            trials,
            workers,
        )
        config = RunConfig(
            study=study,
            storage=storage or default_url(run_dir),
            run_dir=str(run_dir.resolve()),
            task=task,
            data=str(Path(data).resolve()) if data else None,
            space=str(Path(space).resolve()) if space else None,
            objectives=[o.name for o in objs],
            budget={k: v for k, v in vars(budget).items() if v is not None},
            trials=trials,
            timeout=timeout,
            seed=seed,
            sampler=sampler,
            prune=prune,
            proxy=proxy,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
        _, _, st = prepare_run(config, console)
        log.info("study %s in %s; run directory %s", study, safe_url(config.storage), run_dir)
        run_search(config, workers=workers, console=console)
        final = finalize(config, st)
        report = render_report(run_dir)
        log.info("chosen models: %s", [(f["trial"], f["test_acc"], f["params"]) for f in final])
    except NetArchitectError as exc:
        log.error("error: %s", exc)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
    return DesignResult(run_dir, st, final, report)
