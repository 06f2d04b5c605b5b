"""One search worker: joins a study and runs trials until the study has enough of them.

A trial samples a candidate (spec + training hyper-parameters), checks the
cheap constraints (rejected candidates are recorded as FAIL with the violated
constraint and never trained), optionally filters by a zero-cost proxy, then
trains with early stopping and reports the objectives. A candidate the study
has already trained is never trained again: the trial reuses that result
(user attribute ``reused_from``) and does not count towards the trained
trials; one that another worker is training right now is rejected
(``duplicate``). Run as a process with
``python -m netarchitect.search.worker RUN_DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ..errors import BudgetError, NetArchitectError, SpecError
from ..network import build
from ..spec import spec_hash
from ..weights import save_weights
from .config import RunConfig
from .constraints import Budget, Rejected, check
from .objectives import Objective, make_sampler, resolve_sampler
from .proxies import ProxyFilter, score
from .pruning import is_reused, make_pruner, make_stopper
from .space import SearchSpace
from .tasks import SearchTask
from .trainer import TrainConfig, TrainResult

__all__ = [
    "CandidateObjective",
    "candidate_key",
    "finished",
    "main",
    "run_worker",
    "trained",
    "trial_seed",
    "weights_path",
]

Trainer = Callable[..., TrainResult]


def fit_task(
    model: torch.nn.Module,
    task: SearchTask,
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[int, float], bool] | None = None,
) -> TrainResult:
    """The default trainer: the task's own loop (``task.fit``)."""
    return task.fit(model, cfg, on_epoch=on_epoch)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
BUDGET_EXIT = 3  # a worker's exit status for an empty feasible region
REUSED_ATTRS = ("val_acc", "val_loss", "best_epoch", "epochs_run", "curve", "stopped")
log = logging.getLogger("netarchitect.search")


def trial_seed(seed: int, params: dict[str, Any]) -> int:
    """A training seed fixed by the study seed and the trial's parameters (same for a retry)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return (zlib.crc32(text.encode()) + 7919 * seed) % (2**31 - 1)


def candidate_key(spec_digest: str, train_values: dict[str, Any]) -> str:
    """What makes two trials the same candidate: the spec and the sampled training values."""
    text = json.dumps([spec_digest, train_values], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def trained(trial: FrozenTrial) -> bool:
    """Whether the trial trained its candidate (completed or stopped early; not a reused result)."""
    return trial.state in DONE and not is_reused(trial)


def finished(study: optuna.Study) -> int:
    """Trials that trained (completed or stopped early); reused results do not count."""
    return sum(trained(t) for t in study.get_trials(deepcopy=False, states=DONE))


def weights_path(run_dir: str | Path, number: int) -> Path:
    """Where a worker caches the trained weights of trial ``number``."""
    return Path(run_dir) / "trials" / f"trial_{number:05d}.safetensors"


class CandidateObjective:
    """The Optuna objective: sample, check constraints, (proxy-filter,) train, report."""

    def __init__(
        self,
        config: RunConfig,
        task: SearchTask,
        space: SearchSpace,
        objectives: Sequence[Objective],
        budget: Budget,
        *,
        trainer: Trainer = fit_task,
    ) -> None:
        self.config, self.task, self.space = config, task, space
        self.objectives, self.budget, self.trainer = list(objectives), budget, trainer
        self.need_latency = any(o.name == "latency" for o in objectives)
        self.filter = ProxyFilter(config.proxy_keep) if config.proxy else None
        self.flat = resolve_sampler(config.sampler, len(self.objectives)) == "nsga2"
        self.cost_inputs = task.cost_inputs()

    def _reject(self, trial: optuna.Trial, reason: str, detail: str) -> None:
        trial.set_user_attr("rejected", reason)
        trial.set_user_attr("violation", detail)
        raise Rejected(reason, detail)

    def _proxy(self, trial: optuna.Trial, model: torch.nn.Module) -> None:
        assert self.filter is not None and self.config.proxy is not None
        gen = torch.Generator().manual_seed(self.config.seed)
        x = self.task.proxy_inputs(64, gen)
        if x is None:  # the task has no plain input batch (``design`` refuses --proxy for it)
            return
        value = score(self.config.proxy, model, x)
        previous = [
            t.user_attrs["proxy_score"]
            for t in trial.study.get_trials(deepcopy=False)
            if "proxy_score" in t.user_attrs and t.number != trial.number
        ]
        trial.set_user_attr("proxy_score", value)
        if not self.filter.accept(value, previous):
            self._reject(
                trial, "proxy", f"{self.config.proxy} score {value:.4g} below the kept fraction"
            )

    def _reuse(self, trial: optuna.Trial, key: str) -> list[float] | None:
        """The values of a trained trial with the same candidate (``None`` if there is none);
        rejects the trial if another worker is training that candidate now."""
        trial.set_user_attr("candidate", key)  # before looking: see the note below
        same = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING))
            if t.number != trial.number and t.user_attrs.get("candidate") == key
        ]
        done = [t for t in same if trained(t)]
        if done:
            source = min(done, key=lambda t: t.number)
            trial.set_user_attr("reused_from", source.number)
            for name in REUSED_ATTRS:
                if name in source.user_attrs:
                    trial.set_user_attr(name, source.user_attrs[name])
            if source.state == TrialState.PRUNED:
                raise optuna.TrialPruned()
            return list(source.values)
        # Each trial records its key before it looks, so of two trials that start the same
        # candidate at once at least one sees the other and steps aside.
        running = [t.number for t in same if t.state == TrialState.RUNNING]
        if running:
            self._reject(
                trial, "duplicate", f"the same candidate as trial {running[0]}, running now"
            )
        return None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if self.flat:  # NSGA-II evolves only parameters that every trial has
            self.space.suggest_all(trial)
        try:
            spec = self.space.sample(trial)
            values = self.space.sample_train(trial)
            self.task.check_model(spec)
            measurement, violation = check(
                self.budget, spec, need_latency=self.need_latency, inputs=self.cost_inputs
            )
        except SpecError as exc:  # choices that do not fit together (e.g. shapes)
            self._reject(trial, "invalid", str(exc).splitlines()[0])
        cfg = TrainConfig.from_dict(values, seed=trial_seed(self.config.seed, trial.params))
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("spec_hash", spec_hash(spec))
        trial.set_user_attr("train", cfg.to_dict())
        for key, value in measurement.to_dict().items():
            trial.set_user_attr(key, value)
        if violation is not None:
            self._reject(trial, violation.name, str(violation))
        reused = self._reuse(trial, candidate_key(spec_hash(spec), values))
        if reused is not None:
            return reused
        model = build(spec, seed=cfg.seed)
        if self.filter is not None:
            self._proxy(trial, model)
        costs = {
            "params": measurement.params,
            "macs": measurement.macs,
            "latency": measurement.latency_ms,
        }
        stopper = make_stopper(trial, self.objectives, costs, self.config.prune, cfg.epochs)
        result = self.trainer(model, self.task, cfg, on_epoch=stopper)
        for key in ("val_acc", "val_loss", "best_epoch", "epochs_run", "curve", "stopped"):
            trial.set_user_attr(key, getattr(result, key))
        trial.set_user_attr("train_seconds", result.seconds)
        values = [
            result.val_acc if o.name == "accuracy" else costs[o.name] for o in self.objectives
        ]
        if result.stopped == "pruned":
            if len(self.objectives) == 1:
                raise optuna.TrialPruned()
            return values  # dominated; COMPLETE so that NSGA-II counts it (see pruning.py)
        save_weights(model, weights_path(self.config.run_dir, trial.number))
        return values


class StopWhenDone:
    """Optuna callback: stop once the study has ``target`` trained trials.

    A long run of consecutive budget rejections (an empty feasible region) is a
    :class:`BudgetError`; ``max_repeats`` trials in a row that trained nothing,
    some of them proposing a candidate the study already had, stop the worker
    (the space holds no new feasible candidate).
    """

    def __init__(self, target: int, max_rejections: int, max_repeats: int = 50) -> None:
        self.target, self.max_rejections, self.max_repeats = target, max_rejections, max_repeats
        self.rejections = self.idle = self.repeats = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get("rejected") if trial.state == TrialState.FAIL else None
        repeat = reason == "duplicate" or is_reused(trial)
        if reason is not None and not repeat:
            self.rejections += 1
            if self.rejections >= self.max_rejections:
                raise BudgetError(
                    f"{self.rejections} candidates in a row were rejected without training "
                    f"(last: {trial.user_attrs.get('violation')}); relax the budget"
                )
        else:
            self.rejections = 0
        trained_now = trained(trial)
        self.idle = 0 if trained_now else self.idle + 1
        self.repeats = 0 if trained_now else self.repeats + repeat
        if self.repeats and self.idle >= self.max_repeats:
            log.warning(
                "stopping: %d trials in a row trained nothing new, %d of them repeating a "
                "candidate of the study (the search space looks exhausted)",
                self.idle,
                self.repeats,
            )
            study.stop()
        if finished(study) >= self.target:
            study.stop()


def load_worker_study(config: RunConfig) -> optuna.Study:
    """Load the run's study with its sampler (per-trial seeds, see ``seeding.py``) and pruner."""
    from .storage import open_storage

    objectives = config.parsed_objectives()
    storage = open_storage(
        config.storage,
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
    )
    sampler = make_sampler(config.sampler, len(objectives), seed=config.seed, trials=config.trials)
    return optuna.load_study(
        study_name=config.study,
        storage=storage,
        sampler=sampler,
        pruner=make_pruner(config.prune and len(objectives) == 1),
    )


def run_worker(
    config: RunConfig,
    *,
    trainer: Trainer = fit_task,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> int:
    """Run trials of ``config``'s study until it has ``config.trials`` trained trials (or the
    timeout passes); returns the number of trained trials in the study."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    task = config.load_task()
    objective = CandidateObjective(
        config,
        task,
        config.load_space(task),
        config.parsed_objectives(),
        config.parsed_budget(),
        trainer=trainer,
    )
    study = load_worker_study(config)
    if finished(study) < config.trials:
        study.optimize(
            objective,
            timeout=config.timeout,
            catch=(Rejected,),
            gc_after_trial=False,
            callbacks=[
                StopWhenDone(config.trials, config.max_rejections, config.max_repeats),
                *callbacks,
            ],
        )
    return finished(study)


def main(argv: Sequence[str] | None = None) -> int:
    """Process entry point: ``python -m netarchitect.search.worker RUN_DIR``."""
    parser = argparse.ArgumentParser(prog="netarchitect-search-worker")
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    try:
        run_worker(RunConfig.load(args.run_dir))
    except BudgetError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return BUDGET_EXIT
    except NetArchitectError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
