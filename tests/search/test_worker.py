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
from netarchitect.search.constraints import Rejected
from netarchitect.search.designer import prepare_run
from netarchitect.search.final import front_trials
from netarchitect.search.pruning import fully_trained, is_reused, is_stopped, references
from netarchitect.search.runner import run_search, status_of
from netarchitect.search.storage import create_or_load_study, open_storage
from netarchitect.search.worker import (
    CandidateObjective,
    StopWhenDone,
    candidate_key,
    main,
    run_worker,
    trained,
    trial_seed,
    weights_path,
)

WIDE = """
name: wide
nodes:
  - {id: fc, block: linear, params: {out_features: !choice [4, 512]}}
  - {id: act, block: relu}
  - {id: head, block: linear, params: {out_features: $num_classes}}
train: {epochs: !int [2, 3], lr: !float [0.01, 0.05], patience: 5}
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


FOUR = """
nodes:
  - {id: fc, block: linear, params: {out_features: !choice [4, 8]}}
  - {id: act, block: !choice [relu, tanh]}
  - {id: head, block: linear, params: {out_features: $num_classes}}
train: {epochs: 2, lr: 0.03}
"""


@pytest.mark.parametrize("sampler", ["random", "nsga2"])
def test_a_candidate_is_trained_once_and_its_result_reused(config_factory, tmp_path, sampler):
    space = tmp_path / "four.yaml"
    space.write_text(FOUR)  # four candidates in all
    config = config_factory(space=space, trials=4, sampler=sampler, max_repeats=20)
    prepare_run(config)
    trainer = CountingTrainer()
    assert run_worker(config, trainer=trainer) == 4
    trials = load(config).trials
    done = [t for t in trials if trained(t)]
    assert len(trainer.params) == len(done) == 4
    assert len({t.user_attrs["candidate"] for t in done}) == 4
    reused = [t for t in trials if is_reused(t)]
    for t in reused:  # the same candidate's values and curve, without training
        source = trials[t.user_attrs["reused_from"]]
        assert t.values == source.values and t.user_attrs["curve"] == source.user_attrs["curve"]
        assert not weights_path(config.run_dir, t.number).exists()
        assert not fully_trained(t) and not is_stopped(t)
    config.trials = 6  # more than the space holds: stops after max_repeats repeats in a row
    config.max_repeats = 3
    assert run_worker(config, trainer=trainer) == 4 and len(trainer.params) == 4
    assert sum(is_reused(t) for t in load(config).trials) >= len(reused) + 3
    report = render_report(config.run_dir).read_text()
    assert f"{sum(is_reused(t) for t in load(config).trials)} reused an earlier trial's result" in (
        report
    )
    assert "its result reused, not trained" in report
    assert [e["trial"] for e in final_entries(config)] == [
        t.number for t in front_trials(load(config).trials, config.parsed_objectives())
    ]


def final_entries(config):
    from netarchitect.search.final import finalize

    return finalize(config, load(config))


def test_reuse_running_and_stopped_duplicates(config_factory):
    config = config_factory(objectives=["accuracy"], sampler="tpe")
    task = config.load_task()
    objective = CandidateObjective(
        config,
        task,
        config.load_space(task),
        config.parsed_objectives(),
        config.parsed_budget(),
    )
    create_or_load_study(open_storage(config.storage), config.study, config.directions)
    study = load(config)
    running = study.ask()
    running.set_user_attr("candidate", "k")
    other = study.ask()
    with pytest.raises(Rejected, match="duplicate: the same candidate as trial 0, running now"):
        objective._reuse(other, "k")
    study.tell(other, state=TrialState.FAIL)
    running.set_user_attr("curve", [0.5, 0.75])
    study.tell(running, [0.75])
    again = study.ask()
    assert objective._reuse(again, "k") == [0.75]
    assert again.user_attrs["reused_from"] == 0 and again.user_attrs["curve"] == [0.5, 0.75]
    study.tell(again, [0.75])
    pruned = study.ask()
    pruned.set_user_attr("candidate", "p")
    study.tell(pruned, state=TrialState.PRUNED)
    with pytest.raises(optuna.TrialPruned):
        objective._reuse(study.ask(), "p")
    assert objective._reuse(study.ask(), "new") is None
    assert candidate_key("h", {"lr": 0.1, "epochs": 2}) == candidate_key(
        "h", {"epochs": 2, "lr": 0.1}
    )
    assert candidate_key("h", {"lr": 0.1}) != candidate_key("g", {"lr": 0.1})


def test_stop_rule_counts_repeats_apart_from_rejections():
    study = optuna.create_study()
    stopped: list[int] = []
    study.stop = lambda: stopped.append(len(study.trials))  # type: ignore[method-assign]
    stop = StopWhenDone(target=10, max_rejections=2, max_repeats=3)

    def trial(state, **attrs):
        t = study.ask()
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        study.tell(t, 0.5 if state == TrialState.COMPLETE else None, state=state)
        return study.trials[-1]

    def rejected(reason="params"):
        return trial(TrialState.FAIL, rejected=reason, violation="x")

    stop(study, rejected())
    stop(study, rejected("duplicate"))  # a duplicate is not a budget rejection ...
    assert (stop.rejections, stop.idle, stop.repeats) == (0, 2, 1)
    stop(study, trial(TrialState.COMPLETE))  # ... and a trained trial resets everything
    assert (stop.rejections, stop.idle, stop.repeats) == (0, 0, 0)
    stop(study, rejected())
    stop(study, trial(TrialState.COMPLETE, reused_from=0))  # a feasible candidate exists
    assert stop.rejections == 0 and not stopped
    stop(study, rejected())
    assert stopped == [6]  # three trials without a new candidate, one a repeat: exhausted
    with pytest.raises(BudgetError, match="2 candidates in a row were rejected"):
        stop(study, rejected())
