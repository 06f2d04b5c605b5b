"""`netarchitect design` end to end with the embedded default (digits, packaged space, 50k params)
at a reduced trial count: the report files, resuming the study, re-rendering the report."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from rich.console import Console

from netarchitect import build, load_spec
from netarchitect.search import design, get_task, render_report
from netarchitect.search import final as final_module
from netarchitect.search.report import load_run_study
from netarchitect.search.tasks import Task
from netarchitect.weights import load_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    console = Console(record=True, width=160)
    result = design(trials=2, workers=1, out=out, console=console)  # one real worker process
    return result, console.export_text()


def test_default_design_run_writes_the_report_files(default_run):
    result, shown = default_run
    run = result.run_dir
    assert run.name == "digits" and "digits: 10 classes" in shown and "trial 2/2" in shown
    names = {p.name for p in run.iterdir()}
    assert {
        "report.md",
        "pareto.png",
        "history.png",
        "run.json",
        "study.db",
        "design.log",
        "models",
    } <= names
    for png in ("pareto.png", "history.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name.startswith("worker-") for p in (run / "logs").iterdir()] == [True]  # its own
    report = (run / "report.md").read_text()
    for section in (
        "# Search report: digits",
        "params ≤ 50,000",
        "## Chosen models (Pareto front)",
        "## Why these models",
        "## Search space",
        "`train.lr`",
        "## All trials",
        "![Pareto front](pareto.png)",
    ):
        assert section in report
    assert result.final and all(f["params"] <= 50_000 for f in result.final)
    task = get_task("digits")
    for f in (
        result.final
    ):  # each chosen model: spec YAML + safetensors weights, test accuracy reproducible
        folder = run / f["dir"]
        spec = load_spec(folder / "spec.yaml")
        model = load_weights(build(spec), folder / "weights.safetensors").eval()
        acc = float((model(task.x_test).argmax(1) == task.y_test).float().mean())
        assert acc == pytest.approx(f["test_acc"])
        assert f"{100 * f['test_acc']:.2f}%" in report
    config = json.loads((run / "run.json").read_text())
    assert config["budget"] == {"max_params": 50_000} and config["objectives"] == [
        "accuracy",
        "macs",
    ]


def test_rerunning_continues_the_study_and_evaluates_the_test_split_once(default_run, monkeypatch):
    result, _ = default_run
    before = {t.number: t.values for t in result.study.get_trials() if t.values}
    evaluated = []
    real_test = Task.test

    def counting_test(task, model):
        evaluated.append(len(task.x_test))
        return real_test(task, model)

    monkeypatch.setattr(Task, "test", counting_test)
    old_final = {f["trial"]: f["test_acc"] for f in result.final}
    again = design(trials=3, workers=0, out=result.run_dir.parent, console=Console(width=160))
    trials = again.study.get_trials()
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3
    assert {n: trials[n].values for n in before} == before  # nothing lost, nothing retrained
    new_front = {f["trial"] for f in again.final}
    assert len(evaluated) == len(
        new_front - set(old_final)
    )  # only newly chosen models saw the test split
    for f in again.final:
        if f["trial"] in old_final:
            assert f["test_acc"] == old_final[f["trial"]]


def test_lost_model_files_are_rewritten_without_a_new_test_evaluation(default_run):
    result, _ = default_run
    config, study = load_run_study(result.run_dir)
    entry = final_module.finalize(config, study)[0]
    cached = final_module.weights_path(config.run_dir, entry["trial"])
    cached.unlink(missing_ok=True)
    for f in (result.run_dir / entry["dir"]).iterdir():
        f.unlink()
    stray = result.run_dir / "models" / "trial_99999"  # a model that is no longer on the front
    stray.mkdir()
    again = final_module.finalize(config, study)[0]
    assert not stray.exists()
    assert again["weights"] == "retrained from its seed" and again["test_acc"] == entry["test_acc"]
    assert (result.run_dir / entry["dir"] / "weights.safetensors").is_file()


def test_report_is_re_rendered_from_the_storage(default_run, run_cli):
    result, _ = default_run
    run = result.run_dir
    render_report(run)
    text = (run / "report.md").read_text()
    for name in ("report.md", "pareto.png", "history.png"):
        (run / name).unlink()
    code, out, _ = run_cli(["report", str(run)])
    assert code == 0 and "report.md" in out
    assert (run / "report.md").read_text() == text and (run / "pareto.png").is_file()
    spec = yaml.safe_load(
        (
            run
            / "models"
            / next(iter(sorted(p.name for p in (run / "models").iterdir())))
            / "spec.yaml"
        ).read_text()
    )
    assert spec["inputs"]["x"]["shape"] == [1, 8, 8]
    _, study = load_run_study(run)
    assert isinstance(study, optuna.Study) and study.user_attrs["final_models"]
