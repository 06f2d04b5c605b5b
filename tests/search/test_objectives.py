"""Objectives, Pareto dominance, hypervolume and sampler choice."""

from __future__ import annotations

import optuna
import pytest

from netarchitect import NetArchitectError
from netarchitect.search import OBJECTIVES, dominates, hypervolume, pareto_front, parse_objectives
from netarchitect.search.objectives import make_sampler

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
    assert isinstance(make_sampler("auto", 1, seed=0, trials=40), optuna.samplers.TPESampler)
    nsga = make_sampler("auto", 2, seed=0, trials=40)
    assert isinstance(nsga, optuna.samplers.NSGAIISampler)
    assert isinstance(make_sampler("random", 2, seed=0, trials=40), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("tpe", 2, seed=0, trials=40), optuna.samplers.TPESampler)
    with pytest.raises(NetArchitectError, match="unknown sampler 'nsga'"):
        make_sampler("nsga", 2, seed=0, trials=40)
