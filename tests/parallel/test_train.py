import json
import shutil
from dataclasses import replace

import pytest
import torch

from netarchitect.parallel._spawn import RankFailed, run_ranks
from netarchitect.parallel.checkpoint import CheckpointError
from netarchitect.parallel.errors import ParallelError
from netarchitect.parallel.train import (
    ModelSource,
    TrainArgs,
    build_model,
    load_task,
    prepare,
    resolve_model,
    run_training,
)
from netarchitect.parallel.train_log import plot_loss, read_metrics
from tests.parallel import _ranks_train
from tests.parallel._ranks_train import step_losses, write_spec

# digits: 1,077 training samples; batch 128 gives 8 optimizer steps per epoch
QUICK = {"epochs": 1, "batch_size": 128, "warmup": 2, "lr": 1e-2}


def _args(tmp_path, name="out", **kw) -> TrainArgs:
    spec = write_spec(tmp_path)
    return TrainArgs(model=spec, out=str(tmp_path / name), **{**QUICK, **kw})


@pytest.mark.slow  # about 10 s: the first imports of DCP, sklearn and matplotlib
def test_single_process_trains_digits_and_writes_every_file(tmp_path):
    args = _args(tmp_path, epochs=2)
    result = run_training(args)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "loss.png", "metrics.jsonl", "result.json", "spec.yaml", "train.json",
        "weights.safetensors",
    ]
    assert result["steps"] == 16 and result["world_size"] == 1
    assert result["test_metric"] > 0.5  # 10 classes: chance is 0.1
    records = read_metrics(out / "metrics.jsonl")
    losses = step_losses(out)
    assert len(losses) == 16 and losses[-1] < losses[0]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [e["step"] for e in epochs] == [8, 16]
    lrs = [r["lr"] for r in records if r["type"] == "step"]
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(1e-2)  # warm-up 2
    assert lrs[-1] < lrs[2]  # cosine decay
    assert json.loads((out / "result.json").read_text())["test_metric"] == result["test_metric"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000008", "step_00000016"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "train.json").read_text())["epochs"] == 2


def test_accumulation_equals_one_large_batch(tmp_path):
    run_training(_args(tmp_path, "big", batch_size=128))
    run_training(_args(tmp_path, "acc", batch_size=64, accumulate=2))
    torch.testing.assert_close(step_losses(tmp_path / "acc"), step_losses(tmp_path / "big"),
                               rtol=1e-5, atol=1e-6)


def test_bf16_and_checkpointing_run(tmp_path):
    result = run_training(_args(tmp_path, amp="bf16", checkpointing=True, clip=0.0))
    assert result["steps"] == 8


def test_resume_from_another_model_is_refused(tmp_path):
    run_training(_args(tmp_path))
    other = replace(_args(tmp_path), model=write_spec(tmp_path, "wide.yaml", hidden=24),
                    resume=True)
    with pytest.raises(CheckpointError, match="is of another model: parameter"):
        prepare(other)


def test_resume_single_process_continues_the_curve(tmp_path):
    full = _args(tmp_path, "full", epochs=2)
    run_training(full)
    again = _args(tmp_path, "again", epochs=2, checkpoint_every=3)
    run_training(again)
    shutil.rmtree(tmp_path / "again" / "checkpoints" / "step_00000016")
    run_training(replace(again, resume=True))  # from step 15, mid-epoch 2
    torch.testing.assert_close(step_losses(tmp_path / "again"), step_losses(tmp_path / "full"),
                               rtol=0, atol=0)

    def epoch_losses(name):
        return [r["train_loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl")
                if r["type"] == "epoch"]

    assert epoch_losses("again") == pytest.approx(epoch_losses("full"))  # incl. the resumed one
    result = run_training(replace(again, resume=True))  # already complete: only the test
    assert result["steps"] == 16 and result["val_metric"] > 0.5
    assert len(step_losses(tmp_path / "again")) == 16


def test_bad_settings_are_parallel_errors(tmp_path):
    with pytest.raises(ParallelError, match="--nproc: invalid value 0"):
        TrainArgs(model="m", out="o", nproc=0)
    with pytest.raises(ParallelError, match="--amp: invalid value 'fp8'"):
        TrainArgs(model="m", out="o", amp="fp8")
    with pytest.raises(ParallelError, match="more than the 1077 training samples"):
        prepare(_args(tmp_path, batch_size=2000))
    with pytest.raises(ParallelError, match="smaller than the 4 data-parallel ranks"):
        prepare(_args(tmp_path, batch_size=2, nproc=4))
    with pytest.raises(ParallelError, match="does not divide the world size 3"):
        prepare(_args(tmp_path, nproc=3, tp=2))
    with pytest.raises(ParallelError, match="--pp-schedule: invalid value 'zb'"):
        TrainArgs(model="m", out="o", pp_schedule="zb")
    prepare(_args(tmp_path, nproc=2, pp=2))  # fine: checked, nothing written
    for kw in ({"nproc": 4}, {"nproc": 2, "fsdp": True}):
        with pytest.raises(ParallelError, match="--pp 2: pipeline training runs one stage per "
                           "process; use --nproc 2 without --fsdp or --tp"):
            prepare(_args(tmp_path, pp=2, **kw))
    with pytest.raises(ParallelError, match="--batch-size 127 is not divisible by --pp 2"):
        prepare(_args(tmp_path, nproc=2, pp=2, batch_size=127))
    with pytest.raises(ParallelError, match="3 block boundaries allow at most 4 pipeline stages"):
        prepare(_args(tmp_path, nproc=8, pp=8))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParallelError, match="exists and is not a folder"):
        prepare(replace(_args(tmp_path), out=str(tmp_path / "file")))
    assert not (tmp_path / "out").exists()


def test_model_sources(tmp_path):
    spec = write_spec(tmp_path)
    assert resolve_model(spec) == ModelSource("spec", spec)
    with pytest.raises(ParallelError, match="not a spec file, a model folder.*resnet18"):
        resolve_model("resnet19")
    with pytest.raises(ParallelError, match="spec file or folder 'nope/my.yaml' does not exist"):
        resolve_model("nope/my.yaml")
    with pytest.raises(ParallelError, match="a folder without run.json"):
        resolve_model(str(tmp_path))
    task = load_task(_args(tmp_path))
    with pytest.raises(ParallelError, match="outputs shape \\[7\\] per sample; task digits"):
        build_model(ModelSource("spec", write_spec(tmp_path, "c7.yaml", classes=7)), task,
                    seed=0, device="meta")
    bad = tmp_path / "vec.yaml"
    spec_data = _ranks_train.tiny_spec()
    spec_data["inputs"]["x"]["shape"] = [64]
    spec_data["nodes"] = spec_data["nodes"][1:]
    spec_data["nodes"][0]["inputs"] = ["x"]
    import yaml

    bad.write_text(yaml.safe_dump(spec_data))
    with pytest.raises(ParallelError, match="cannot take the task's inputs \\[1, 8, 8\\]"):
        build_model(ModelSource("spec", str(bad)), task, seed=0, device="meta")
    with pytest.raises(ParallelError, match="takes tensor data sets"):
        load_task(replace(_args(tmp_path), task="karate"))


def test_plot_handles_an_empty_log(tmp_path):
    assert plot_loss([], tmp_path / "x.png").is_file()
    assert read_metrics(tmp_path / "none.jsonl") == []
    (tmp_path / "m.jsonl").write_text('{"type": "step", "step": 1, "loss": 1.0}\n{"type": "st')
    assert read_metrics(tmp_path / "m.jsonl") == [{"type": "step", "step": 1, "loss": 1.0}]


@pytest.mark.slow
def test_two_ranks_give_the_single_process_loss_curve(tmp_path):
    single = _args(tmp_path, "one", batch_size=100)
    run_training(single)
    two = _args(tmp_path, "two", batch_size=100, nproc=2)  # 50 samples per rank
    ranks = run_ranks(_ranks_train.train_rank, 2, two.to_json(), timeout=120)
    assert ranks[0]["result"]["world_size"] == 2
    torch.testing.assert_close(ranks[0]["losses"], step_losses(tmp_path / "one"),
                               rtol=1e-5, atol=1e-6)
    assert ranks[0]["result"]["test_metric"] == pytest.approx(
        json.loads((tmp_path / "one" / "result.json").read_text())["test_metric"], abs=0.01)


@pytest.mark.slow
def test_a_killed_rank_resumes_from_the_last_checkpoint_with_the_same_curve(tmp_path):
    ref = _args(tmp_path, "ref", epochs=2, checkpoint_every=3)
    run_training(ref)  # one process: the same curve as two (checked above), no extra spawn
    expected = step_losses(tmp_path / "ref")
    args = _args(tmp_path, "killed", epochs=2, nproc=2, checkpoint_every=3)
    with pytest.raises(RankFailed, match="rank 1 died with exit code 17"):
        run_ranks(_ranks_train.train_rank, 2, args.to_json(), "1:11", timeout=60)
    ckpts = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert ckpts[-1] == "step_00000009"  # the last complete one before step 11
    resumed = replace(args, resume=True)
    got = run_ranks(_ranks_train.train_rank, 2, resumed.to_json(), timeout=120)[0]["losses"]
    assert len(got) == 16
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fsdp2_tensor_and_pipeline_parallel_give_the_single_process_loss_curve(tmp_path):
    spec = write_spec(tmp_path, mlp=32)  # an MLP block: column/row-wise roles for tp
    base = {"model": spec, **QUICK}
    run_training(TrainArgs(out=str(tmp_path / "one"), **base))
    runs = [TrainArgs(out=str(tmp_path / "fsdp"), nproc=2, fsdp=True, **base),
            TrainArgs(out=str(tmp_path / "tp"), nproc=2, tp=2, **base),
            TrainArgs(out=str(tmp_path / "pp"), nproc=2, pp=2, **base)]
    resume = replace(runs[0], out=str(tmp_path / "fsdp2"), epochs=2, checkpoint_every=3)
    resume_pp = replace(runs[2], out=str(tmp_path / "pp2"), epochs=2, checkpoint_every=3,
                        pp_schedule="gpipe")
    fsdp, tp, pp, _, resumed, _, resumed_pp = run_ranks(
        _ranks_train.train_ranks_many, 2,
        [(runs[0].to_json(), None), (runs[1].to_json(), None), (runs[2].to_json(), None),
         (resume.to_json(), None),
         (replace(resume, resume=True).to_json(), 9),  # killed after step 9: DCP reloads the FSDP2 shards
         (resume_pp.to_json(), None),
         (replace(resume_pp, resume=True).to_json(), 9)],  # each stage reloads its own part
        timeout=240)[0]
    expected = step_losses(tmp_path / "one")
    for losses in (fsdp, tp, pp):
        torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)
    run_training(TrainArgs(out=str(tmp_path / "one2"), **{**base, "epochs": 2}))
    for losses in (resumed, resumed_pp):
        torch.testing.assert_close(losses, step_losses(tmp_path / "one2"), rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "pp" / "result.json").read_text())["test_metric"] == (
        pytest.approx(json.loads((tmp_path / "one" / "result.json").read_text())["test_metric"],
                      abs=0.01))
    from netarchitect.weights import load_weights

    for name in ("one", "fsdp", "tp", "pp"):  # full weights gathered from the shards / stages
        model = build_model(ModelSource("folder", str(tmp_path / name)),
                            load_task(runs[0]), seed=1)
        load_weights(model, tmp_path / name / "weights.safetensors")
        if name == "one":
            ref = model.state_dict()
        else:
            torch.testing.assert_close(model.state_dict(), ref, rtol=1e-4, atol=1e-5)


def test_process_count_and_kill_hook_and_disabled_log(tmp_path, monkeypatch):
    from netarchitect.parallel.train import KILL_ENV, _kill_step
    from netarchitect.parallel.train_log import MetricsLog

    with pytest.raises(ParallelError, match="--nproc 2 but 1 processes are running"):
        run_training(_args(tmp_path, nproc=2))  # not under torchrun
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv(KILL_ENV, "1:7")
    assert _kill_step(1) == 7 and _kill_step(0) is None
    monkeypatch.delenv(KILL_ENV)
    assert _kill_step(1) is None
    log = MetricsLog(tmp_path / "m.jsonl", enabled=False)  # ranks > 0 write nothing
    log.write({"step": 1})
    log.truncate_after(0)
    assert not log.path.exists()
