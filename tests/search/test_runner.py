"""The study driver: worker failures become one clear error, Ctrl-C stops the worker processes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from netarchitect import BudgetError, NetArchitectError
from netarchitect.search import runner
from netarchitect.search.designer import prepare_run
from netarchitect.search.runner import _worker_error, run_search


def quiet() -> Console:
    return Console(file=io.StringIO())


def test_worker_errors_become_one_line(tmp_path):
    log = tmp_path / "worker-0.log"
    log.write_text("starting\nerror: 200 candidates in a row were rejected; relax the budget\n")
    err = _worker_error(log, 3)
    assert isinstance(err, BudgetError) and str(err).startswith("200 candidates")
    err = _worker_error(log, 2)
    assert type(err) is NetArchitectError and "relax the budget" in str(err)
    log.write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    assert "exited with status 1 (RuntimeError: boom); see" in str(_worker_error(log, 1))
    log.write_text("")
    assert "(no output)" in str(_worker_error(log, -9))


@pytest.mark.slow
def test_a_failing_worker_process_is_reported(config_factory):
    config = config_factory(trials=2)
    prepare_run(config)
    Path(config.run_dir, "run.json").write_text("{}")  # the worker cannot read its settings
    with pytest.raises(NetArchitectError, match="unreadable run settings"):
        run_search(config, workers=1, console=quiet())


def test_ctrl_c_stops_the_worker_processes(config_factory, monkeypatch):
    config = config_factory(trials=2)
    prepare_run(config)
    spawned = []
    real_spawn = runner._spawn

    def spawn(cfg, workers):
        procs = real_spawn(cfg, workers)
        spawned.extend(p for p, _ in procs)
        return procs

    def interrupt(self, trials):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_spawn", spawn)
    monkeypatch.setattr(runner._Display, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_search(config, workers=2, console=quiet())
    assert len(spawned) == 2 and all(p.poll() is not None for p in spawned)


def test_each_process_claims_its_own_log(tmp_path):
    import threading

    from netarchitect.search.runner import claim_log

    claimed: list = []

    def claim() -> None:
        path, fh = claim_log(tmp_path / "logs", "worker")
        fh.close()
        claimed.append(path)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for p in claimed)
    assert len(set(names)) == 8 and all(n.startswith("worker-") for n in names)
    assert {n.rsplit("-", 1)[1] for n in names} == {f"{k}.log" for k in range(8)}
    path, fh = claim_log(tmp_path / "logs", "worker")  # a later run: the next free number
    fh.close()
    assert path.name.endswith("-8.log")
