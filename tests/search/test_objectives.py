"""Objectives, Pareto dominance, hypervolume and sampler choice."""

from __future__ import annotations

import optuna
import pytest

from netarchitect import NetArchitectError
from netarchitect.search import OBJECTIVES, dominates, hypervolume, pareto_front, parse_objectives
from netarchitect.search.objectives import make_sampler
from netarchitect.search.seeding import TrialSeededSampler, trial_stream_seed

MAX_MIN = ["maximize", "minimize"]


def test_parse_objectives():
    objs = parse_objectives("accuracy, macs")
    assert [o.name for o in objs] == ["accuracy", "macs"] and objs[0].direction == "maximize"
    assert [o.name for o in parse_objectives(["latency", "accuracy"])] == ["latency", "accuracy"]
    with pytest.raises(NetArchitectError, match="unknown objective 'mac'.*did you mean 'macs'"):
        parse_objectives("accuracy,mac")
    with pytest.raises(NetArchitectError, match="listed twice"):
        parse_objectives("accuracy,macs,macs")
    with pytest.raises(NetArchitectError, match="must include accuracy"):
        parse_objectives("macs,params")
    with pytest.raises(NetArchitectError, match="must include accuracy"):
        parse_objectives("")


def test_objective_formatting_and_signs():
    assert OBJECTIVES["accuracy"].format(0.98765) == "98.77%" and OBJECTIVES["accuracy"].sign == -1
    assert OBJECTIVES["macs"].format(12345.0) == "12,345" and OBJECTIVES["macs"].sign == 1
    assert OBJECTIVES["latency"].format(0.12345) == "0.123 ms"


def test_dominance_and_front():
    assert dominates([0.9, 10], [0.8, 10], MAX_MIN)
    assert dominates([0.9, 5], [0.9, 10], MAX_MIN)
    assert not dominates([0.9, 10], [0.9, 10], MAX_MIN)  # equal points do not dominate
    assert not dominates([0.95, 20], [0.9, 10], MAX_MIN)  # a trade-off
    points = [[0.90, 10], [0.95, 20], [0.85, 30], [0.95, 20], [0.80, 5], [0.9, 12]]
    assert pareto_front(points, MAX_MIN) == [0, 1, 4]  # the duplicate keeps its first occurrence
    assert pareto_front([], MAX_MIN) == []


def test_hypervolume_closed_forms():
    # Two points (acc, macs) with reference (0, 100): union of [0,.9]x[10,100] and [0,.95]x[20,100].
    assert hypervolume([[0.9, 10], [0.95, 20]], MAX_MIN, [0.0, 100.0]) == pytest.approx(
        0.9 * 90 + 0.05 * 80
    )
    assert hypervolume([[0.9, 10], [0.5, 50]], MAX_MIN, [0.0, 100.0]) == pytest.approx(
        0.9 * 90
    )  # dominated
    assert hypervolume([[0.9, 200]], MAX_MIN, [0.0, 100.0]) == 0.0  # beyond the reference
    cube = hypervolume([[1, 1, 1]], ["minimize"] * 3, [2, 3, 4])
    assert cube == pytest.approx(1 * 2 * 3)
    # Boxes [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] minus their overlap [0,1]^3: 2 + 2 - 1.
    assert hypervolume([[0, 1, 0], [1, 0, 0]], ["minimize"] * 3, [2, 2, 1]) == pytest.approx(3.0)


def test_samplers():
    def inner(name, n):
        sampler = make_sampler(name, n, seed=0, trials=40)
        assert isinstance(sampler, TrialSeededSampler)
        return sampler.inner

    assert isinstance(inner("auto", 1), optuna.samplers.TPESampler)
    assert isinstance(inner("auto", 2), optuna.samplers.NSGAIISampler)
    assert isinstance(inner("random", 2), optuna.samplers.RandomSampler)
    assert isinstance(inner("tpe", 2), optuna.samplers.TPESampler)
    with pytest.raises(NetArchitectError, match="unknown sampler 'nsga'"):
        make_sampler("nsga", 2, seed=0, trials=40)


def draws(study: optuna.Study, n: int) -> list[dict]:
    for _ in range(n):
        t = study.ask()
        x = t.suggest_float("x", 0, 1)
        t.suggest_categorical("c", ["a", "b", "c", "d"])
        study.tell(t, [x, -x])
    return [t.params for t in study.trials]


@pytest.mark.parametrize("name", ["random", "nsga2", "tpe"])
def test_each_trial_draws_from_its_own_stream(tmp_path, name):
    """Resuming (a new sampler object on the same storage) or adding a second process never
    replays the draws of earlier trials; the same seed gives the same trials."""
    url = f"sqlite:///{tmp_path / 'study.db'}"

    def sampler(seed=0):
        return make_sampler(name, 2, seed=seed, trials=16)

    def study(name_, seed=0):
        return optuna.create_study(
            study_name=name_,
            storage=url,
            directions=["maximize", "minimize"],
            sampler=sampler(seed),
            load_if_exists=True,
        )

    first = draws(study("a"), 4)
    resumed = draws(study("a"), 4)  # a new process with the same seed continues the study
    assert resumed[:4] == first
    assert len({repr(sorted(p.items())) for p in resumed}) == 8  # nothing replayed
    two = [study("b"), study("b")]  # two processes on one study, interleaved
    for _ in range(3):
        for s in two:
            draws(s, 1)
    assert len({repr(sorted(t.params.items())) for t in two[0].trials}) == 6
    assert draws(study("c"), 8) == resumed  # the same seed: the same trials
    assert draws(study("d", seed=1), 4) != first


def test_trial_stream_seeds():
    assert trial_stream_seed(0, 5) == trial_stream_seed(0, 5)
    assert len({trial_stream_seed(s, n) for s in range(3) for n in range(3)}) == 9
    assert trial_stream_seed(1, 1) != trial_stream_seed(2, 0)  # not seed + number
