"""Real worker processes on real storage: kill -9 mid-trial and resume, two workers on one SQLite
file, and PostgreSQL shared by two "machines" (run directories)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from netarchitect.search import render_report
from netarchitect.search.designer import prepare_run
from netarchitect.search.final import finalize
from netarchitect.search.storage import open_storage
from netarchitect.search.worker import finished, run_worker, trained, weights_path

pytestmark = pytest.mark.slow


def slow_space(tmp_path, epochs: int):
    text = f"""
nodes:
  - {{id: fc, block: linear, params: {{out_features: !choice [8, 16, 32]}}}}
  - {{id: act, block: !choice [relu, tanh]}}
  - {{id: head, block: linear, params: {{out_features: $num_classes}}}}
train: {{lr: !float {{low: 1.0e-2, high: 5.0e-2, log: true}}, epochs: {epochs}, patience: 1000}}
"""
    path = tmp_path / f"slow_{epochs}.yaml"
    path.write_text(text)
    return path


def load(config) -> optuna.Study:
    return optuna.load_study(
        study_name=config.study, storage=open_storage(config.storage, heartbeat_interval=None)
    )


def test_resume_after_kill_9_of_a_worker_mid_trial(tmp_path, config_factory, worker_command):
    config = config_factory(
        space=slow_space(tmp_path, 120), trials=3, prune=False, heartbeat_interval=1, grace_period=2
    )
    prepare_run(config)
    study = load(config)
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(worker_command(config), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, "the worker never reached its second trial"
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            trials = study.get_trials(deepcopy=False)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if done and running:
                age = time.time() - running[0].datetime_start.timestamp()
                if 0.3 < age < 1.5:  # well inside a trial of several seconds
                    break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed = running[0]
    kept = {t.number: t.values for t in done}
    assert (
        load(config).trials[killed.number].state == TrialState.RUNNING
    )  # left behind by the dead worker
    time.sleep(config.grace_period + 1.5)  # its heartbeat goes stale

    assert run_worker(config) >= 3  # re-running continues the study
    trials = load(config).trials
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("retry_history") == [killed.number]]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same candidate, trained again
    assert {n: trials[n].values for n in kept} == kept  # no completed trial was lost
    done = [t for t in trials if trained(t)]  # the resumed worker replays no earlier candidate
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == len(done)
    assert finished(load(config)) >= 3
    report = render_report(config.run_dir).read_text()
    assert f"worker lost; retried as trial {retries[0].number}" in report
    assert (
        f"retry of trial {killed.number}" in report
        and "1 lost with their worker and retried" in report
    )


def test_two_local_workers_share_one_study(tmp_path, config_factory, worker_command):
    config = config_factory(space=slow_space(tmp_path, 25), trials=6, prune=False)
    prepare_run(config)
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = []
    for i, path in enumerate(logs):
        with path.open("wb") as log:
            procs.append(
                subprocess.Popen(worker_command(config), stdout=log, stderr=subprocess.STDOUT)
            )
    for p in procs:
        p.wait(timeout=300)
    text = "\n".join(p.read_text() for p in logs)
    assert [p.returncode for p in procs] == [0, 0], text
    assert "locked" not in text
    trials = load(config).trials
    assert finished(load(config)) >= 6
    assert not [t for t in trials if t.state == TrialState.FAIL]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    done = [t for t in trials if trained(t)]  # two processes never train one candidate twice
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == len(done)


def test_postgresql_study_shared_by_two_run_directories(tmp_path, config_factory, postgres_url):
    study = f"pg_{uuid.uuid4().hex[:8]}"
    first = config_factory(study=study, storage=postgres_url, trials=3)
    prepare_run(first)
    assert run_worker(first) == 3
    second = config_factory(
        storage=postgres_url, trials=5
    )  # another machine: its own run directory
    second.study = study
    prepare_run(second)
    assert run_worker(second) == 5
    pg = load(second)
    firsts = {n for n in range(5) if weights_path(first.run_dir, n).is_file()}
    seconds = {n for n in range(5) if weights_path(second.run_dir, n).is_file()}
    assert firsts == {0, 1, 2} and seconds == {3, 4}  # each machine trained its own trials
    numbers = [t.number for t in pg.trials if t.state == TrialState.COMPLETE]
    cached = {n: weights_path(second.run_dir, n).is_file() for n in numbers}
    entries = finalize(second, pg)
    for e in entries:  # trials of the other machine are retrained from their seed
        expected = "trained in the search" if cached[e["trial"]] else "retrained from its seed"
        assert e["weights"] == expected and 0.5 < e["test_acc"] <= 1.0
    assert {e["trial"] for e in entries} == {
        int(k) for k in load(second).user_attrs["final_models"]
    }
