import json
import shutil

import numpy as np
import pytest
import torch

from netarchitect.cli import main
from netarchitect.parallel.launch import RankError, rank_entry, root_failure
from netarchitect.parallel.train import KILL_ENV, TrainArgs, prepare, resolve_model
from tests.parallel._ranks_train import step_losses, write_spec

QUICK = ["--epochs", "1", "--batch-size", "128", "--warmup", "2", "--lr", "1e-2"]


def _train(capsys, *argv):
    code = main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "digitz"], "error: unknown task 'digitz'"),
        (["--data", "missing.npz"], "data file 'missing.npz' does not exist"),
        (["--nproc", "0"], "error: --nproc: invalid value 0"),
        (["--nproc", "3", "--tp", "2"], "tp=2 x pp=1 = 2 does not divide the world size 3"),
        (["--nproc", "2", "--tp", "2"], "tp=2: Network has no attention or MLP projections"),
        (["--batch-size", "0"], "--batch-size: invalid value 0"),
        (["--nproc", "4", "--pp", "2"], "--pp 2: pipeline training runs one stage per process"),
        (["--nproc", "2", "--pp", "2", "--batch-size", "63"],
         "--batch-size 63 is not divisible by --pp 2"),
        (["--nproc", "5", "--pp", "5"], "3 block boundaries allow at most 4 pipeline stages"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, spec, extra, message):
    out = tmp_path / "run"
    code, _, err = _train(capsys, spec, "--out", out, *extra)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_unknown_model_and_unfit_registered_model(tmp_path, capsys):
    code, _, err = _train(capsys, "resnet19", "--out", tmp_path / "o")
    assert code == 2 and "'resnet19' is not a spec file" in err
    code, _, err = _train(capsys, "gpt2-tiny", "--out", tmp_path / "o")
    assert code == 2 and "gpt2-tiny cannot be built for task digits" in err
    assert not (tmp_path / "o").exists()


def test_registered_model_is_built_for_the_task():
    source, task, model = prepare(TrainArgs(model="resnet18", out="unused"))
    assert source.kind == "registered" and task.name == "digits"
    assert model.num_classes == 10 and next(model.parameters()).is_meta


@pytest.mark.slow
def test_train_end_to_end_then_fine_tune_the_folder_and_refusals(tmp_path, capsys, spec):
    out = tmp_path / "run"
    code, stdout, _ = _train(capsys, spec, "--out", out, *QUICK)
    assert code == 0
    assert "trained" in stdout and "test accuracy" in stdout
    assert (out / "weights.safetensors").is_file() and (out / "loss.png").is_file()
    first = step_losses(out)
    # a non-empty --out needs --resume; a checkpoint of another model is refused
    code, _, err = _train(capsys, spec, "--out", out, *QUICK)
    assert code == 2 and "pass --resume" in err
    wide = write_spec(tmp_path, "wide.yaml", hidden=32)
    code, _, err = _train(capsys, wide, "--out", out, "--resume", *QUICK)
    assert code == 2 and "is of another model" in err
    assert step_losses(out) == first  # untouched
    # the output folder is a model folder: training it starts from its weights
    code, _, _ = _train(capsys, out, "--out", tmp_path / "tuned", *QUICK)
    assert code == 0
    assert step_losses(tmp_path / "tuned")[0] < first[0]


def _fake_run_dir(tmp_path, model_folder):
    from netarchitect.search.config import RunConfig

    run = tmp_path / "search"
    (run / "models").mkdir(parents=True)
    for n in (3, 7):
        shutil.copytree(model_folder, run / "models" / f"trial_{n:05d}")
    config = RunConfig(study="s", storage=f"sqlite:///{run}/study.db", run_dir=str(run),
                       task="wine")
    config.save()
    return run, config


def test_run_directory_sources(tmp_path, spec):
    import optuna

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(spec, folder / "spec.yaml")
    run, config = _fake_run_dir(tmp_path, folder)
    source = resolve_model(str(run), trial=7)
    assert source.ref.endswith("trial_00007") and source.task == "wine"
    assert source.weights is None
    with pytest.raises(Exception, match="no chosen model trial_00009; it has trial_00003"):
        resolve_model(str(run), trial=9)
    study = optuna.create_study(storage=config.storage, study_name="s")
    with pytest.raises(Exception, match="no chosen models yet"):
        resolve_model(str(run))
    study.set_user_attr("final_models", {
        "3": {"trial": 3, "val_acc": 0.9, "dir": "models/trial_00003"},
        "7": {"trial": 7, "val_acc": 0.95, "dir": "models/trial_00007"},
    })
    assert resolve_model(str(run)).ref.endswith("trial_00007")  # best validation metric
    assert resolve_model(str(folder)).kind == "folder"


def test_data_file_task(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(90, 64)), y=np.arange(90) % 3)
    spec = write_spec(tmp_path, classes=3)
    code, _, err = _train(capsys, spec, "--data", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert code == 2 and "is more than the 54 training samples of d" in err
    code, stdout, _ = _train(capsys, spec, "--data", tmp_path / "d.npz", "--out", tmp_path / "o",
                             "--batch-size", "16", "--epochs", "1")
    assert code == 0 and "on d: 3 steps" in stdout


def test_root_failure_names_the_first_failing_rank(tmp_path, capsys):
    errors = tmp_path / "errors"
    errors.mkdir()
    torchrun = ("  rank      : 0 (local_rank: 0)\n  exitcode  : -15 (pid: 1)\n"
                "  rank      : 1 (local_rank: 1)\n  exitcode  : 17 (pid: 2)\n")
    (errors / "rank0.json").write_text(json.dumps({
        "rank": 0, "time": 2.0, "type": "RuntimeError", "message": "Connection closed",
        "user": False, "traceback": "tb0\n"}))
    err = root_failure(torchrun, errors, 1)
    assert "rank 1 exited with code 17 without an error" in str(err)
    killed = torchrun.replace("17 (pid: 2)", "-9 (pid: 2)")
    assert "rank 1 was killed by signal 9" in str(root_failure(killed, errors, 1))
    err = root_failure("", errors, 1)
    assert isinstance(err, RankError) and err.rank == 0 and "Connection closed" in str(err)
    (errors / "rank1.json").write_text(json.dumps({
        "rank": 1, "time": 1.0, "type": "ParallelError", "message": "bad layout",
        "user": True, "traceback": ""}))
    assert str(root_failure(torchrun, errors, 1)) == "rank 1: bad layout"
    shutil.rmtree(errors)
    errors.mkdir()
    err = root_failure("some\nnoise", errors, 3)
    assert "torchrun failed with exit code 3" in str(err) and err.rank == -1


def test_rank_entry_reports_errors(tmp_path, monkeypatch, capsys):
    errors = tmp_path / "errors"
    errors.mkdir()
    monkeypatch.setenv("NETARCHITECT_TRAIN_ERRORS", str(errors))
    config = tmp_path / "args.json"
    config.write_text(TrainArgs(model="resnet19", out=str(tmp_path / "o")).to_json())
    assert rank_entry(["--config", str(config)]) == 2
    report = json.loads((errors / "rank0.json").read_text())
    assert report["user"] and "resnet19" in report["message"]
    config.write_text("{}")  # TrainArgs without a model: an internal error
    assert rank_entry(["--config", str(config)]) == 1
    assert not json.loads((errors / "rank0.json").read_text())["user"]
    monkeypatch.delenv("NETARCHITECT_TRAIN_ERRORS")
    assert rank_entry(["--config", str(config)]) == 1  # no folder to report to: still 1
    spec = write_spec(tmp_path)
    config.write_text(TrainArgs(model=spec, out=str(tmp_path / "ok"), epochs=1,
                                batch_size=512).to_json())
    assert rank_entry(["--config", str(config)]) == 0
    assert (tmp_path / "ok" / "result.json").is_file()


@pytest.mark.slow
def test_two_processes_under_torchrun_kill_and_resume(tmp_path, capsys, monkeypatch, spec):
    args = [spec, *QUICK, "--epochs", "2", "--checkpoint-every", "3"]
    assert _train(capsys, *args, "--out", tmp_path / "one")[0] == 0
    out = tmp_path / "two"
    monkeypatch.setenv(KILL_ENV, "1:8")
    code, _, err = _train(capsys, *args, "--out", out, "--nproc", "2", "--dist-timeout", "30")
    assert code == 2
    assert "error: rank 1 exited with code 17 without an error" in err
    assert err.count("\n") == 1
    assert max(p.name for p in (out / "checkpoints").iterdir()) == "step_00000006"
    monkeypatch.delenv(KILL_ENV)
    code, _, _ = _train(capsys, *args, "--out", out, "--nproc", "2", "--resume")
    assert code == 0
    torch.testing.assert_close(step_losses(out), step_losses(tmp_path / "one"),
                               rtol=1e-5, atol=1e-6)
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 16


def test_more_processes_than_cores_warns(capsys):
    import io

    from rich.console import Console

    from netarchitect.parallel.launch import _warn_cores

    _warn_cores(100_000, None)
    assert "warning: --nproc 100000 is more than the" in capsys.readouterr().err
    console = Console(file=io.StringIO(), width=200)
    _warn_cores(100_000, console)
    assert "CPU core(s)" in console.file.getvalue()
    _warn_cores(1, None)
    assert capsys.readouterr().err == ""


def test_cuda_requested_without_cuda(tmp_path, capsys, spec):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = _train(capsys, spec, "--out", tmp_path / "o", "--device", "cuda")
    assert code == 2 and "no CUDA device" in err
