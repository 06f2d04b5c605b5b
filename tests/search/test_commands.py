"""`netarchitect design` / `report` bad inputs: one error line, exit status 2, nothing but a log."""

from __future__ import annotations

import numpy as np
import pytest

from netarchitect.cli import main as cli_main


def written(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def one_line_error(err: str, *fragments: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def out(tmp_path):
    return tmp_path / "runs"


def test_bad_data_file(run_cli, tmp_path, out):
    data = tmp_path / "mine.npz"
    np.savez(data, X=np.zeros((20, 3)))
    code, _, err = run_cli(["design", "--data", str(data), "--out", str(out)])
    assert code == 2
    one_line_error(err, "missing array(s) ['y']")
    assert written(out) == ["mine/design.log"]
    assert "missing array" in (out / "mine" / "design.log").read_text()


def test_space_without_free_dimension(run_cli, tmp_path, out):
    space = tmp_path / "fixed.yaml"
    space.write_text("nodes: [{id: head, block: linear, params: {out_features: $num_classes}}]\n")
    code, _, err = run_cli(["design", "--task", "moons", "--space", str(space), "--out", str(out)])
    assert code == 2
    one_line_error(err, "no free dimension")
    assert written(out) == ["moons/design.log"]


@pytest.mark.slow
def test_empty_feasible_region(run_cli, out):
    code, _, err = run_cli(["design", "--task", "moons", "--max-params", "10", "--out", str(out)])
    assert code == 2
    one_line_error(err, "no candidate meets the budget", "params exceeded its limit")
    assert written(out) == ["moons/design.log"]


def test_unreachable_storage(run_cli, out):
    url = "postgresql+psycopg://user:secret@127.0.0.1:1/nowhere"
    code, _, err = run_cli(["design", "--task", "moons", "--storage", url, "--out", str(out)])
    assert code == 2
    one_line_error(err, "cannot open storage", "user:***@127.0.0.1:1")
    assert "secret" not in err
    assert written(out) == ["moons/design.log"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--max-params", "0"], "max-params must be > 0"),
        (["--max-latency-ms", "-1"], "max-latency-ms must be > 0"),
        (["--max-activation-mb", "0"], "max-activation-mb must be > 0"),
        (["--trials", "0"], "--trials must be a positive integer"),
        (["--trials", "abc"], "invalid int value: 'abc'"),
        (["--timeout", "0"], "--timeout must be > 0"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--seed", "-3"], "--seed must be >= 0"),
        (["--objectives", "accuracy,flops"], "unknown objective 'flops'"),
        (["--sampler", "grid"], "invalid choice: 'grid'"),
        (["--study", "../escape"], "--study '../escape' must be letters"),
        (["--task", "mnist"], "unknown task 'mnist'"),
        (["--space", "missing.yaml"], "does not exist"),
    ],
)
def test_bad_options(run_cli, out, argv, fragment):
    code, _, err = run_cli(["design", "--out", str(out), *argv])
    assert code == 2
    one_line_error(err, fragment)
    assert written(out) in ([], ["digits/design.log"], ["mnist/design.log"])  # at most the log


def test_report_of_a_directory_that_is_not_a_run(run_cli, tmp_path):
    code, _, err = run_cli(["report", str(tmp_path)])
    assert code == 2
    one_line_error(err, "not a search run directory")


def test_the_lead_cli_has_the_sub_commands(capsys):
    try:
        code = cli_main(["design", "--help"])
    except SystemExit as exc:
        code = exc.code
    if code != 0:
        pytest.skip("netarchitect.cli does not register search.commands yet (the lead wires it)")
    assert "--max-params" in capsys.readouterr().out
    assert cli_main(["design", "--max-params", "0"]) == 2
    assert capsys.readouterr().err.strip().startswith("error:")


@pytest.mark.slow
def test_design_and_report_commands_on_a_small_task(run_cli, tmp_path, out):
    space = tmp_path / "tiny.yaml"
    space.write_text(
        "nodes:\n  - {id: fc, block: linear, params: {out_features: !choice [4, 8]}}\n"
        "  - {id: act, block: relu}\n  - {id: head, block: linear, params: {out_features: 2}}\n"
        "train: {epochs: 2, lr: 0.05}\n"
    )
    code, shown, err = run_cli(
        [
            "design",
            "--task",
            "moons",
            "--space",
            str(space),
            "--trials",
            "2",
            "--workers",
            "0",
            "--out",
            str(out),
            "--objectives",
            "accuracy,params",
        ]
    )
    assert code == 0, err
    assert "chosen models" in shown and "report:" in shown and "models/trial_" in shown
    run = out / "moons"
    code, shown, _ = run_cli(["report", str(run)])
    assert code == 0 and str(run / "report.md") in shown.replace("\n", "")
    (run / "run.json").write_text("{not json")
    code, _, err = run_cli(["report", str(run)])
    assert code == 2
    one_line_error(err, "unreadable run settings")


def test_report_of_a_run_whose_study_is_gone(run_cli, tmp_path):
    from netarchitect.search.config import RunConfig
    from netarchitect.search.storage import default_url

    RunConfig(study="gone", storage=default_url(tmp_path), run_dir=str(tmp_path)).save()
    code, _, err = run_cli(["report", str(tmp_path)])
    assert code == 2
    one_line_error(err, "study 'gone' not found")


def test_design_api_rejects_unknown_sampler_and_proxy(tmp_path):
    from netarchitect import NetArchitectError
    from netarchitect.search import design

    with pytest.raises(NetArchitectError, match="--sampler must be one of"):
        design(sampler="grid", out=tmp_path)
    with pytest.raises(NetArchitectError, match="--proxy must be one of"):
        design(proxy="grasp", out=tmp_path)
    assert not list(tmp_path.iterdir())
