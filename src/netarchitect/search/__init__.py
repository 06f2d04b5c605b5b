"""Architecture and hyper-parameter search over specs (``netarchitect design``).

Spaces are specs with searchable values (:class:`Choice`, :class:`IntRange`,
:class:`FloatRange`, :class:`Repeat`); candidates are checked against a
:class:`Budget` on the meta device before training; Optuna runs the study
(TPE, NSGA-II or random) in a storage shared by worker processes; the Pareto
front is evaluated once on the test split and written with a report.
"""

from .constraints import Budget, Measurement, Violation, check, find_feasible, measure
from .design import DEFAULT_MAX_PARAMS, DEFAULT_TRIALS, DesignResult, design
from .dimensions import Choice, FloatRange, IntRange, Repeat
from .objectives import (
    OBJECTIVES,
    Objective,
    dominates,
    hypervolume,
    pareto_front,
    parse_objectives,
)
from .proxies import naswot, synflow
from .pruning import ParetoStopRule
from .report import render_report
from .space import Dimension, SearchSpace
from .tasks import (
    DataError,
    Task,
    get_task,
    list_tasks,
    load_npz_task,
    register_task,
    task_from_arrays,
)
from .trainer import TrainConfig, TrainResult, evaluate, train

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "DEFAULT_TRIALS",
    "OBJECTIVES",
    "Budget",
    "Choice",
    "DataError",
    "DesignResult",
    "Dimension",
    "FloatRange",
    "IntRange",
    "Measurement",
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
