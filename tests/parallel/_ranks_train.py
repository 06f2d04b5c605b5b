"""Rank functions and a tiny digits spec for the training tests (importable in spawned ranks)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from netarchitect.parallel.train import KILL_ENV, TrainArgs, run_training
from netarchitect.parallel.train_log import read_metrics


def tiny_spec(hidden: int = 16, classes: int = 10, mlp: int = 0) -> dict:
    """A flatten → linear → relu → linear classifier of 8×8 one-channel digits; ``mlp > 0``
    puts an MLP block (hidden width ``mlp``: tensor-parallel roles) before the head."""
    ffn = [{"id": "ffn", "block": "mlp", "params": {"hidden_dim": mlp}}] if mlp else []
    return {
        "name": f"tiny_mlp_{hidden}",
        "inputs": {"x": {"shape": [1, 8, 8], "dtype": "float32"}},
        "nodes": [
            {"id": "flat", "block": "flatten", "inputs": ["x"]},
            {"id": "fc1", "block": "linear", "params": {"out_features": hidden}},
            {"id": "act", "block": "relu"},
            *ffn,
            {"id": "head", "block": "linear", "params": {"out_features": classes}},
        ],
        "outputs": ["head"],
    }


def write_spec(folder: Path, name: str = "tiny.yaml", **kwargs: int) -> str:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(tiny_spec(**kwargs)), encoding="utf-8")
    return str(path)


def step_losses(out: str | Path) -> list[float]:
    """The per-step training losses logged in ``out/metrics.jsonl``."""
    return [r["loss"] for r in read_metrics(Path(out) / "metrics.jsonl") if r["type"] == "step"]


def train_rank(rank: int, world_size: int, args_json: str, kill: str | None = None) -> dict:
    """Train as one rank of ``world_size``; ``kill`` (``"RANK:STEP"``) makes that rank die."""
    if kill:
        os.environ[KILL_ENV] = kill
    result = run_training(TrainArgs.from_json(args_json))
    return {"result": result, "losses": step_losses(TrainArgs.from_json(args_json).out)}


def train_ranks_many(
    rank: int, world_size: int, runs: list[tuple[str, int | None]]
) -> list[list[float]]:
    """Several trainings in one process group; rank 0's step losses of each. A run given
    ``(args_json, keep_up_to)`` first loses the checkpoints after step ``keep_up_to`` (as if
    the run had been killed then), so its ``resume`` restarts there."""
    import shutil

    import torch.distributed as dist

    losses = []
    for args_json, keep_up_to in runs:
        if keep_up_to is not None and rank == 0:
            folder = Path(TrainArgs.from_json(args_json).out) / "checkpoints"
            for path in folder.glob("step_*"):
                if int(path.name[5:]) > keep_up_to:
                    shutil.rmtree(path)
        dist.barrier()
        losses.append(train_rank(rank, world_size, args_json)["losses"])
    return losses
