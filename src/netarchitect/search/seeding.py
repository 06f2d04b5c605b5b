"""Per-trial sampler seeds: every trial of a study draws from its own random stream.

A sampler seeded once per worker process replays its draws whenever a process
starts again with the same seed: a study resumed after ``kill -9`` repeated its
first trials, and two processes on one study proposed the same candidates.
:class:`TrialSeededSampler` instead builds a fresh sampler for each trial,
seeded from ``(seed, trial number)``. Trial numbers are handed out by the
storage and are unique within a study, so a resumed run, a second process and
a second machine each get new draws, while the same study seed still gives the
same first trials (model-based samplers such as TPE and NSGA-II also read the
study's history, which lives in the storage, not in the sampler object).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialSeededSampler", "trial_stream_seed"]


def trial_stream_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` in a study searched with ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates to ``factory(trial_stream_seed(seed, trial.number))``, rebuilt for every trial."""

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int) -> None:
        self.factory, self.seed = factory, seed
        self.inner = factory(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner = self.factory(trial_stream_seed(self.seed, trial.number))
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # pragma: no cover - called by Optuna only for n_jobs > 1
        self.inner.reseed_rng()
