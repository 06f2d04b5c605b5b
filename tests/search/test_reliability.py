"""Studies under real process failures, through the ``netarchitect design`` command itself:
``kill -9`` of the whole command mid-trial then a re-run, and two commands on one study at once.
Whatever happens, no completed trial is lost, no candidate is trained twice, and every process
writes its own log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from netarchitect.search.pruning import is_reused
from netarchitect.search.storage import StorageError, default_url, open_storage
from netarchitect.search.worker import trained

pytestmark = pytest.mark.slow

SPACE = """
nodes:
  - {id: fc, block: linear, params: {out_features: !choice [8, 16, 32]}}
  - {id: act, block: !choice [relu, tanh]}
  - {id: head, block: linear, params: {out_features: $num_classes}}
train: {lr: !float {low: 1.0e-2, high: 5.0e-2, log: true}, epochs: EPOCHS, patience: 1000}
"""


def design_command(tmp_path: Path, trials: int, epochs: int) -> list[str]:
    space = tmp_path / f"space_{epochs}.yaml"
    space.write_text(SPACE.replace("EPOCHS", str(epochs)))
    return [
        sys.executable,
        "-m",
        "netarchitect",
        "design",
        "--task",
        "moons",
        "--space",
        str(space),
        "--trials",
        str(trials),
        "--workers",
        "1",
        "--objectives",
        "accuracy,params",
        "--out",
        str(tmp_path / "runs"),
        "--study",
        "shared",
    ]


def load(run: Path) -> optuna.Study:
    storage = open_storage(default_url(run), heartbeat_interval=None, create=False)
    return optuna.load_study(study_name="shared", storage=storage)


def trials_so_far(run: Path) -> list:
    """The study's trials, or none while the command has not created it yet."""
    try:
        return load(run).trials
    except (KeyError, StorageError):
        return []


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def assert_nothing_trained_twice(trials: list) -> None:
    done = [t for t in trials if trained(t)]
    assert len({key(t.params) for t in done}) == len(done), [t.params for t in done]
    assert len({t.user_attrs["candidate"] for t in done}) == len(done)
    for t in trials:  # a reused result points at a trained trial of the same candidate
        if is_reused(t):
            source = trials[t.user_attrs["reused_from"]]
            assert trained(source) and source.user_attrs["candidate"] == t.user_attrs["candidate"]


def test_kill_9_of_the_command_mid_trial_then_rerun(tmp_path):
    command = design_command(tmp_path, trials=5, epochs=150)
    run = tmp_path / "runs" / "shared"
    with (tmp_path / "first.out").open("wb") as out:
        # its own session: the kill takes the command and its worker process together
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, "the first run never reached its third trial"
            assert proc.poll() is None, (tmp_path / "first.out").read_text()
            trials = trials_so_far(run)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if len(done) >= 2 and running:
                age = time.time() - running[0].datetime_start.timestamp()
                if 0.3 < age < 1.0:  # well inside a trial of a few seconds
                    break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    kept = {t.number: (t.params, t.values) for t in done}
    killed = running[0]
    time.sleep(11)  # the killed trial's heartbeat goes stale (grace period 10 s): it is retried

    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    trials = load(run).trials
    assert {n: (trials[n].params, trials[n].values) for n in kept} == kept  # nothing lost
    assert_nothing_trained_twice(trials)
    assert sum(trained(t) for t in trials) == 5
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("retry_history") == [killed.number]]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert trained(retries[0])  # the lost candidate is trained once, by its retry
    logs = sorted((run / "logs").iterdir())
    assert len(logs) == 2, logs  # one per worker process: the killed run's and the re-run's


def test_two_commands_on_one_study_at_once(tmp_path):
    command = design_command(tmp_path, trials=6, epochs=40)
    run = tmp_path / "runs" / "shared"
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    trials = load(run).trials
    assert_nothing_trained_twice(trials)
    assert 6 <= sum(trained(t) for t in trials) <= 7  # each worker stops at the target
    assert len({t.user_attrs["worker"] for t in trials if trained(t)}) == 2  # both trained
    logs = sorted((run / "logs").iterdir())
    assert len(logs) == 2 and len({p.name for p in logs}) == 2
    for log in logs:
        assert "locked" not in log.read_text()
    writers = {line.split()[3] for line in (run / "design.log").read_text().splitlines()}
    assert len(writers) == 2  # the driver log names each process (host:pid) on its lines
