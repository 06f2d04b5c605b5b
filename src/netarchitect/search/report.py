"""``RUN_DIR/report.md`` with ``pareto.png`` and ``history.png``, rendered from the study storage.

:func:`render_report` reads only the run settings (``run.json``) and the
storage: the task and search-space descriptions, every trial, and the test
results of the chosen models stored by :func:`~.final.finalize`. It never
evaluates anything, so it can be re-run at any time (``netarchitect report RUN_DIR``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from .._io import atomic_write_text
from ..errors import NetArchitectError
from .config import RunConfig
from .decisions import decision_records
from .final import front_trials
from .objectives import Objective
from .plots import plot_history, plot_pareto
from .pruning import fully_trained, is_reused, is_stopped
from .scoring import Scoring, get_scoring
from .storage import StorageError, error_detail, open_storage, safe_url

__all__ = ["load_run_study", "render_report"]


def load_run_study(run_dir: str | Path) -> tuple[RunConfig, optuna.Study]:
    """The settings and the study of a run directory (the storage is only read: a missing
    database is an error, never created)."""
    config = RunConfig.load(run_dir)
    storage = open_storage(config.storage, heartbeat_interval=None, create=False)
    try:
        study = optuna.load_study(study_name=config.study, storage=storage)
        study.get_trials(deepcopy=False)  # read everything once: a damaged file fails here
    except KeyError:
        raise NetArchitectError(
            f"study {config.study!r} not found in {safe_url(config.storage)}"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        raise StorageError(
            f"cannot read storage {safe_url(config.storage)}: {error_detail(exc)}"
        ) from None
    return config, study


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "ms":
        return f"{value:.3g}"
    return f"{int(value):,}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _note(t: FrozenTrial, retries: dict[int, int]) -> str:
    a = t.user_attrs
    if is_reused(t):
        return f"same candidate as trial {a['reused_from']}: its result reused, not trained"
    if "rejected" in a:
        return f"rejected without training: {a.get('violation', a['rejected'])}"
    if is_stopped(t):
        return f"stopped early after {a.get('epochs_run', '?')} epochs"
    if t.state == TrialState.FAIL:
        retry = retries.get(t.number)
        return f"worker lost; retried as trial {retry}" if retry is not None else "worker lost"
    history = t.system_attrs.get("retry_history")
    return f"retry of trial {history[-1]}" if history else ""


def _trial_rows(trials: Sequence[FrozenTrial], scoring: Scoring) -> list[list[str]]:
    retries = {
        t.system_attrs["retry_history"][-1]: t.number
        for t in trials
        if t.system_attrs.get("retry_history")
    }
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append(
            [
                str(t.number),
                t.state.name.lower(),
                scoring.format(a.get("val_acc")),
                _fmt(a.get("params"), "n"),
                _fmt(a.get("macs"), "n"),
                _fmt(a.get("latency_ms"), "ms"),
                str(a.get("epochs_run", "–")),
                _note(t, retries),
            ]
        )
    return rows


def _counts(trials: Sequence[FrozenTrial]) -> str:
    complete = sum(fully_trained(t) for t in trials)
    pruned = sum(is_stopped(t) for t in trials)
    reused = sum(is_reused(t) for t in trials)
    rejected = [t for t in trials if "rejected" in t.user_attrs]
    lost = sum(t.state == TrialState.FAIL and "rejected" not in t.user_attrs for t in trials)
    by: dict[str, int] = {}
    for t in rejected:
        by[t.user_attrs["rejected"]] = by.get(t.user_attrs["rejected"], 0) + 1
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(by.items()))
    return (
        f"{len(trials)} trials: {complete} completed, {pruned} stopped early, "
        f"{len(rejected)} rejected without training{f' ({detail})' if detail else ''}, "
        f"{reused} reused an earlier trial's result, "
        f"{lost} lost with their worker and retried"
    )


def _final_rows(
    front: Sequence[FrozenTrial], final: dict[str, Any], scoring: Scoring
) -> list[list[str]]:
    rows = []
    for t in front:
        f = final.get(str(t.number), {})
        rows.append(
            [
                str(t.number),
                scoring.format(t.user_attrs.get("val_acc")),
                scoring.format(f.get("test_acc")),
                _fmt(t.user_attrs.get("params"), "n"),
                _fmt(t.user_attrs.get("macs"), "n"),
                _fmt(f.get("latency_ms"), "ms"),
                f"`{f['dir']}/`" if f else "not evaluated yet",
            ]
        )
    return rows


def render_report(run_dir: str | Path) -> Path:
    """Write ``report.md``, ``pareto.png`` and ``history.png`` in ``run_dir`` from its storage."""
    run_dir = Path(run_dir)
    config, study = load_run_study(run_dir)
    objectives: list[Objective] = config.parsed_objectives()
    trials = study.get_trials(deepcopy=False)
    front = front_trials(trials, objectives)
    attrs = study.user_attrs
    final = attrs.get("final_models", {})
    scoring = get_scoring(attrs.get("task_kind", "classification"))
    plot_pareto(trials, front, objectives, run_dir / "pareto.png", scoring)
    plot_history(trials, run_dir / "history.png", scoring)
    metric = scoring.label
    lines = [f"# Search report: {config.study}", ""]
    lines += [
        f"- **Task**: {attrs.get('task_description', config.task)}",
        f"- **Budget**: {attrs.get('budget_description', 'unlimited')}",
        "- **Objectives**: "
        + ", ".join(
            f"{f'validation {metric}' if o.name == 'accuracy' else o.label} ({o.direction})"
            for o in objectives
        ),
        (
            f"- **Search**: sampler {config.sampler}, "
            f"early stopping {'on' if config.prune else 'off'}, proxy {config.proxy or 'none'}, "
            f"seed {config.seed}, target {config.trials} trained trials"
        ),
        f"- **Storage**: `{safe_url(config.storage)}` (study `{config.study}`)",
        f"- **Trials**: {_counts(trials)}",
        "",
    ]
    lines += [
        "## Chosen models (Pareto front)",
        "",
        (
            f"Test {metric} is measured once per chosen model, after the search; the search "
            "saw only the validation split."
        ),
        "",
    ]
    lines += _table(
        ["trial", f"val {metric}", f"test {metric}", "params", "MACs", "latency (ms)", "files"],
        _final_rows(front, final, scoring),
    )
    lines += [
        "",
        "![Pareto front](pareto.png)",
        "",
        "![History](history.png)",
        "",
    ]
    lines += decision_records(trials, front, objectives, scoring, seed=config.seed, final=final)
    lines += ["## Search space", ""]
    lines += _table(
        ["dimension", "range"],
        [[f"`{p}`", d.replace("|", "\\|")] for p, d in attrs.get("space_dimensions", [])],
    )
    lines += ["", "## All trials", ""]
    lines += _table(
        ["trial", "state", f"val {metric}", "params", "MACs", "latency (ms)", "epochs", "note"],
        _trial_rows(trials, scoring),
    )
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
