"""The chosen models: the Pareto front of the study, evaluated once on the test split.

Each front trial's weights come from the worker's cache in ``RUN_DIR/trials``
(or, for a trial trained on another machine, from a deterministic retrain with
its stored seed and hyper-parameters). The held-out test split is evaluated
exactly once per chosen model; the result is stored in the study
(``final_models``) so that re-rendering a report never touches the test split
again. Each chosen model is written as ``RUN_DIR/models/trial_NNNNN/spec.yaml``
and ``weights.safetensors``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ..network import build
from ..spec import load_spec, save_spec
from ..weights import load_weights, save_weights
from .config import RunConfig
from .constraints import measure_latency
from .objectives import Objective, pareto_front
from .pruning import fully_trained
from .trainer import TrainConfig
from .worker import weights_path

__all__ = ["finalize", "front_trials", "model_dir"]


def model_dir(run_dir: str | Path, number: int) -> Path:
    """Where chosen model ``number`` is written."""
    return Path(run_dir) / "models" / f"trial_{number:05d}"


def front_trials(
    trials: Sequence[FrozenTrial], objectives: Sequence[Objective]
) -> list[FrozenTrial]:
    """Completed trials on the Pareto front, ordered by their first cost (or accuracy)."""
    complete = [t for t in trials if fully_trained(t)]
    front = [
        complete[i]
        for i in pareto_front([t.values for t in complete], [o.direction for o in objectives])
    ]
    key = next((i for i, o in enumerate(objectives) if o.name != "accuracy"), 0)
    sign = objectives[key].sign
    return sorted(front, key=lambda t: (sign * t.values[key], t.number))


def _final_entry(
    config: RunConfig, trial: FrozenTrial, task: Any, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """Write the model's files; evaluate the test split unless ``previous`` already did."""
    spec = load_spec(trial.user_attrs["spec"])
    cfg = TrainConfig.from_dict(trial.user_attrs["train"])
    model = build(spec, seed=cfg.seed)
    cached = weights_path(config.run_dir, trial.number)
    if cached.is_file():
        load_weights(model, cached)
        source = "trained in the search"
    else:  # trained by a worker on another machine: reproduce it from its seed
        task.fit(model, cfg)
        source = "retrained from its seed"
    if previous is None:
        test_acc, test_loss = task.test(model)
    else:  # files were lost: rewrite them, keep the single test evaluation
        test_acc, test_loss = previous["test_acc"], previous["test_loss"]
    latency = trial.user_attrs.get("latency_ms") or measure_latency(
        spec, inputs=task.cost_inputs()
    )
    out = model_dir(config.run_dir, trial.number)
    save_spec(spec, out / "spec.yaml")
    save_weights(model, out / "weights.safetensors")
    return {
        **_interpretability(model, task, out, config.run_dir),
        "trial": trial.number,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "val_acc": trial.user_attrs.get("val_acc"),
        "params": trial.user_attrs.get("params"),
        "macs": trial.user_attrs.get("macs"),
        "latency_ms": latency,
        "weights": source,
        "dir": str(out.relative_to(config.run_dir)),
    }


def _interpretability(model: Any, task: Any, out: Path, run_dir: str | Path) -> dict[str, str]:
    """``{"interpretability": markdown}`` for a prototype or concept-bottleneck model on a
    tensor task (its figure written in ``out``), else nothing."""
    from ..layers.concept import ConceptBottleneckHead
    from ..layers.prototype import PrototypeHead

    kinds = (PrototypeHead, ConceptBottleneckHead)
    if not hasattr(task, "x_train") or not any(isinstance(m, kinds) for m in model.modules()):
        return {}
    from ..interpret.report import interpretability_section

    link = str(out.relative_to(run_dir))
    section = interpretability_section(model, task, out, link_dir=link)
    return {"interpretability": section} if section else {}


def _prune_files(config: RunConfig, keep: set[int]) -> None:
    """Remove chosen-model folders and cached weights of trials that left (or never reached) the
    front: a dominated trial stays dominated as the study grows."""
    names = {model_dir(config.run_dir, n).name for n in keep} | {
        weights_path(config.run_dir, n).name for n in keep
    }
    for folder in ("models", "trials"):
        for path in sorted((Path(config.run_dir) / folder).glob("trial_*")):
            if path.name in names:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def finalize(config: RunConfig, study: optuna.Study) -> list[dict[str, Any]]:
    """Evaluate the not-yet-evaluated front models on the test split once; write their files.

    Returns the entries of the current front, in front order.
    """
    objectives = config.parsed_objectives()
    front = front_trials(study.get_trials(deepcopy=False), objectives)
    stored: dict[str, Any] = dict(study.user_attrs.get("final_models", {}))
    missing = [
        t
        for t in front
        if str(t.number) not in stored
        or not (
            Path(config.run_dir) / stored[str(t.number)]["dir"] / "weights.safetensors"
        ).is_file()
    ]
    if missing:
        task = config.load_task()
        for t in missing:
            stored[str(t.number)] = _final_entry(config, t, task, stored.get(str(t.number)))
        study.set_user_attr("final_models", stored)
    _prune_files(config, {t.number for t in front})
    return [stored[str(t.number)] for t in front]
