"""Architecture and hyper-parameter search over specs (``netarchitect design``).

Spaces are specs with searchable values (:class:`Choice`, :class:`IntRange`,
:class:`FloatRange`, :class:`Repeat`); candidates are checked against a
:class:`Budget` on the meta device before training; Optuna runs the study
(TPE, NSGA-II or random) in a storage shared by worker processes; the Pareto
front is evaluated once on the test split and written with a report.
"""

from importlib import import_module
from typing import Any

# name -> submodule; imported on first use, so `netarchitect.search.tasks` alone (a training
# rank, the CLI) does not pay for Optuna, SQLAlchemy and matplotlib
_NAMES = {
    "Budget": "constraints",
    "Choice": "dimensions",
    "DEFAULT_MAX_PARAMS": "defaults",
    "DEFAULT_TRIALS": "defaults",
    "DataError": "tasks",
    "DesignResult": "designer",
    "Dimension": "space",
    "FloatRange": "dimensions",
    "IntRange": "dimensions",
    "Measurement": "constraints",
    "OBJECTIVES": "objectives",
    "Objective": "objectives",
    "ParetoStopRule": "pruning",
    "Repeat": "dimensions",
    "SearchSpace": "space",
    "Task": "tasks",
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "Violation": "constraints",
    "check": "constraints",
    "design": "designer",
    "dominates": "objectives",
    "evaluate": "trainer",
    "find_feasible": "constraints",
    "get_task": "tasks",
    "hypervolume": "objectives",
    "list_tasks": "tasks",
    "load_npz_task": "tasks",
    "measure": "constraints",
    "naswot": "proxies",
    "pareto_front": "objectives",
    "parse_objectives": "objectives",
    "register_task": "tasks",
    "render_report": "report",
    "synflow": "proxies",
    "task_from_arrays": "tasks",
    "train": "trainer",
}

__all__ = [  # noqa: RUF022 - the order of _NAMES
    "Budget",
    "Choice",
    "DEFAULT_MAX_PARAMS",
    "DEFAULT_TRIALS",
    "DataError",
    "DesignResult",
    "Dimension",
    "FloatRange",
    "IntRange",
    "Measurement",
    "OBJECTIVES",
    "Objective",
    "ParetoStopRule",
    "Repeat",
    "SearchSpace",
    "Task",
    "TrainConfig",
    "TrainResult",
    "Violation",
    "check",
    "design",
    "dominates",
    "evaluate",
    "find_feasible",
    "get_task",
    "hypervolume",
    "list_tasks",
    "load_npz_task",
    "measure",
    "naswot",
    "pareto_front",
    "parse_objectives",
    "register_task",
    "render_report",
    "synflow",
    "task_from_arrays",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})
