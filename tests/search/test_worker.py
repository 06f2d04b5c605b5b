"""The worker's trial loop in-process: rejection before training, determinism, stopping rules."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from netarchitect import BudgetError
from netarchitect.analysis import count_params
from netarchitect.search import render_report, train
from netarchitect.search.design import prepare_run
from netarchitect.search.final import front_trials
from netarchitect.search.pruning import fully_trained, is_stopped, references
from netarchitect.search.runner import run_search, status_of
from netarchitect.search.storage import create_or_load_study, open_storage
from netarchitect.search.worker import main, run_worker, trial_seed, weights_path

WIDE = """
name: wide
nodes:
  - {id: fc, block: linear, params: {out_features: !choice [4, 512]}}
  - {id: act, block: relu}
  - {id: head, block: linear, params: {out_features: $num_classes}}
train: {epochs: !int [2, 3], lr: 0.03, patience: 5}
"""


class CountingTrainer:
    """The real trainer, counting its calls and the size of each model it trains."""

    def __init__(self) -> None:
        self.params: list[int] = []

    def __call__(self, model, task, cfg, on_epoch=None):
        self.params.append(count_params(model).total)
        return train(model, task, cfg, on_epoch=on_epoch)


def load(config):
    return optuna.load_study(
        study_name=config.study, storage=open_storage(config.storage, heartbeat_interval=None)
    )


@pytest.mark.slow
def test_candidates_over_budget_are_rejected_before_training(config_factory, tmp_path):
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE)
    config = config_factory(space=space, budget={"max_params": 200}, trials=3, sampler="random")
    prepare_run(config)
    trainer = CountingTrainer()
    assert run_worker(config, trainer=trainer) == 3
    trials = load(config).trials
    rejected = [t for t in trials if t.state == TrialState.FAIL]
    trained = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert rejected, "the seeded sampler proposes the 512-wide layer at least once"
    assert len(trainer.params) == len(trained) == 3  # the trainer ran only for feasible candidates
    assert all(p <= 200 for p in trainer.params)
    for t in rejected:
        assert t.user_attrs["rejected"] == "params"
        assert t.user_attrs["violation"] == f"params {t.user_attrs['params']:,} > 200"
        assert "val_acc" not in t.user_attrs and not weights_path(config.run_dir, t.number).exists()
    for t in trained:
        assert t.user_attrs["params"] <= 200 and weights_path(config.run_dir, t.number).is_file()
        assert (
            json.loads(json.dumps(t.user_attrs["spec"]))["nodes"][0]["params"]["out_features"] == 4
        )
    assert run_worker(config, trainer=trainer) == 3 and len(trainer.params) == 3  # already done
    assert main([config.run_dir]) == 0
    report = render_report(config.run_dir).read_text()
    assert f"{len(rejected)} rejected without training (params: {len(rejected)})" in report
    assert "rejected without training: params" in report


@pytest.mark.slow
def test_same_seed_same_first_trials_and_metrics(config_factory):
    runs = []
    for name in ("first", "second"):
        config = config_factory(study=name, trials=3, seed=7)
        prepare_run(config)
        run_worker(config)
        runs.append([(t.params, t.values, t.user_attrs.get("curve")) for t in load(config).trials])
    assert runs[0] == runs[1] and len(runs[0]) >= 3
    other = config_factory(study="other", trials=3, seed=8)
    prepare_run(other)
    run_worker(other)
    assert [t.params for t in load(other).trials] != [p for p, _, _ in runs[0]]


def test_trial_seed_depends_on_seed_and_params_only():
    assert trial_seed(0, {"a": 1, "b": "x"}) == trial_seed(0, {"b": "x", "a": 1})
    assert trial_seed(1, {"a": 1}) != trial_seed(0, {"a": 1}) != trial_seed(0, {"a": 2})


def test_a_run_of_rejections_is_a_budget_error(config_factory, tmp_path):
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE.replace("[4, 512]", "[256, 512]"))
    config = config_factory(space=space, budget={"max_params": 200}, max_rejections=3)
    create_or_load_study(
        open_storage(config.storage), config.study, config.directions
    )  # skip the preflight
    config.save()
    with pytest.raises(BudgetError, match="3 candidates in a row were rejected"):
        run_worker(config)
    assert (
        main([config.run_dir]) == 3
    )  # the worker process's exit status for an empty feasible region
    assert main([str(tmp_path / "missing")]) == 2


def test_candidates_that_do_not_fit_together_are_rejected_as_invalid(config_factory, tmp_path):
    space = tmp_path / "misfit.yaml"
    space.write_text(
        "nodes:\n  - {id: fc, block: linear, params: {out_features: !choice [3, 5]}}\n"
        "  - {id: res, block: identity, inputs: [fc, x], merge: add}\n"
    )
    config = config_factory(space=space, max_rejections=2)
    create_or_load_study(open_storage(config.storage), config.study, config.directions)
    config.save()
    with pytest.raises(BudgetError):
        run_worker(config)
    trials = load(config).trials
    assert {t.user_attrs["rejected"] for t in trials} == {"invalid"}
    assert "incompatible shapes" in trials[0].user_attrs["violation"]


@pytest.mark.slow
def test_proxy_filter_and_latency_objective(config_factory):
    config = config_factory(
        trials=7, proxy="naswot", proxy_keep=0.1, objectives=["accuracy", "latency"]
    )
    prepare_run(config)
    run_worker(config)
    trials = load(config).trials
    assert all("proxy_score" in t.user_attrs for t in trials)
    assert any(t.user_attrs.get("rejected") == "proxy" for t in trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(t.values[1] == t.user_attrs["latency_ms"] > 0 for t in done)


@pytest.mark.slow
def test_in_process_search_shows_progress(config_factory):
    config = config_factory(trials=2, objectives=["accuracy"], sampler="tpe")
    _, _, study = prepare_run(config)
    console = Console(record=True, width=120)
    run_search(config, workers=0, console=console)
    text = console.export_text()
    assert "2/2" in text and "best" in text and "Pareto 1" in text
    status = status_of(study.trials, config.parsed_objectives())
    assert status.done == 2 and status.pareto == 1 and status.running == 0
    assert "best" in status.describe()


def test_timeout_stops_starting_trials(config_factory):
    config = config_factory(trials=50, timeout=0.01)
    prepare_run(config)
    assert run_worker(config) == 1  # the first trial runs, then the time is up


def stop_after_first_epoch(model, task, cfg, on_epoch=None):
    """The real trainer, told to stop after one epoch (as the early-stopping rule would)."""
    return train(model, task, cfg, on_epoch=lambda epoch, acc: True)


@pytest.mark.parametrize("objectives", [["accuracy", "macs"], ["accuracy"]])
def test_stopped_trials_are_recorded_for_the_sampler_and_never_chosen(config_factory, objectives):
    config = config_factory(trials=2, objectives=objectives)
    prepare_run(config)
    run_worker(config, trainer=stop_after_first_epoch)
    study = load(config)
    for t in study.trials:
        assert t.user_attrs["stopped"] == "pruned" and t.user_attrs["epochs_run"] == 1
        assert is_stopped(t) and not fully_trained(t)
        assert not weights_path(config.run_dir, t.number).exists()
        # several objectives: COMPLETE, so that NSGA-II counts it; one objective: PRUNED, for TPE
        assert t.state == (TrialState.COMPLETE if len(objectives) > 1 else TrialState.PRUNED)
    assert front_trials(study.trials, config.parsed_objectives()) == []
    assert references(study, config.parsed_objectives()) == []
