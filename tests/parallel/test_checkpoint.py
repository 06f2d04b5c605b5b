import json

import pytest
import torch
from torch import nn

from netarchitect.parallel.checkpoint import (
    CheckpointError,
    check_identity,
    latest_checkpoint,
    load_checkpoint,
    model_identity,
    read_meta,
    save_checkpoint,
)
from netarchitect.parallel.errors import ParallelError


def _setup(out: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, out))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched


def _train_step(model, opt, sched):
    model(torch.randn(5, 4)).square().mean().backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_round_trip_restores_model_optimizer_scheduler_and_rng(tmp_path):
    model, opt, sched = _setup()
    _train_step(model, opt, sched)
    torch.manual_seed(7)
    path = save_checkpoint(tmp_path, 3, model, opt, scheduler=sched, base=model,
                           extra={"epoch": 1})
    expected_draw = torch.rand(3)
    assert path.name == "step_00000003" and (path / "meta.json").is_file()

    model2, opt2, sched2 = _setup(seed=1)
    torch.manual_seed(123)
    meta = load_checkpoint(latest_checkpoint(tmp_path), model2, opt2, scheduler=sched2,
                           base=model2)
    assert meta["step"] == 3 and meta["epoch"] == 1 and meta["world_size"] == 1
    torch.testing.assert_close(torch.rand(3), expected_draw)  # RNG restored
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sched2.last_epoch == sched.last_epoch
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"],
                               opt.state_dict()["state"][0]["exp_avg"], rtol=0, atol=0)
    torch.manual_seed(1)
    _train_step(model, opt, sched)  # the same next step from the same state
    torch.manual_seed(1)
    _train_step(model2, opt2, sched2)
    torch.testing.assert_close(model[0].weight, model2[0].weight, rtol=0, atol=0)


def test_partial_checkpoints_are_ignored_and_cleaned_and_old_ones_pruned(tmp_path):
    model, opt, sched = _setup()
    (tmp_path / ".step_00000009.partial").mkdir()  # a save killed mid-write
    (tmp_path / "step_00000008").mkdir()  # no meta.json: incomplete
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, scheduler=sched, base=model, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step_00000002", "step_00000003", "step_00000008"]
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    save_checkpoint(tmp_path, 3, model, opt, scheduler=sched, base=model)  # rewrite is fine
    assert latest_checkpoint(tmp_path / "missing") is None


def test_another_model_is_refused_naming_the_difference(tmp_path):
    model, opt, sched = _setup()
    path = save_checkpoint(tmp_path, 1, model, opt, scheduler=sched, base=model)
    other, opt2, sched2 = _setup(out=5)
    with pytest.raises(CheckpointError, match=r"another model: parameter '2.weight' has shape "
                       r"\[2, 3\] there, \[5, 3\] here"):
        load_checkpoint(path, other, opt2, scheduler=sched2, base=other)
    assert issubclass(CheckpointError, ParallelError)


def test_identity_differences():
    meta = {"spec_hash": "a" * 64, "params": {"w": [2, 2], "b": [2]}}
    check_identity(meta, {"spec_hash": "a" * 64, "params": {"w": [2, 2], "b": [2]}}, "c")
    with pytest.raises(CheckpointError, match="parameter 'v' of this model is not in it"):
        check_identity(meta, {"spec_hash": None, "params": {"w": [2, 2], "v": [2]}}, "c")
    with pytest.raises(CheckpointError, match="holds parameter 'b' that this model"):
        check_identity(meta, {"spec_hash": None, "params": {"w": [2, 2]}}, "c")
    with pytest.raises(CheckpointError, match="spec hash aaaaaaaaaaaa differs .* bbbbbbbbbbbb"):
        check_identity(meta, {"spec_hash": "b" * 64, "params": {"w": [2, 2], "b": [2]}}, "c")


def test_identity_of_a_spec_network(mlp_spec):
    from netarchitect import build, spec_hash

    net = build(mlp_spec, seed=0)
    ident = model_identity(net)
    assert ident["spec_hash"] == spec_hash(net.spec)
    assert [16, 8] in ident["params"].values()
    assert model_identity(nn.Linear(2, 3))["spec_hash"] is None


def test_unreadable_meta(tmp_path):
    (tmp_path / "meta.json").write_text("{", encoding="utf-8")
    with pytest.raises(CheckpointError, match="cannot read meta.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"step": 1}), encoding="utf-8")
    assert read_meta(tmp_path) == {"step": 1}
