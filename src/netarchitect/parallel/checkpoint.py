"""Resumable distributed checkpoints on ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a folder ``DIR/step_NNNNNNNN`` holding the DCP shards of the model, the
optimizer (both through ``get_state_dict``, so plain, DDP and FSDP2 models save the same
names), the scheduler, every rank's RNG state and the step, plus ``meta.json``: the
model's identity (spec hash, parameter names and shapes), the step and the world size.

Writes are atomic: every rank writes into a hidden ``.step_NNNNNNNN.partial`` folder and
rank 0 renames it when all ranks are done, so a run killed mid-write resumes from the
last complete checkpoint (leftover partial folders are removed by the next save).
Loading a checkpoint of another model is refused naming the first difference.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ParallelError

__all__ = [
    "CheckpointError",
    "check_identity",
    "latest_checkpoint",
    "load_checkpoint",
    "model_identity",
    "save_checkpoint",
]

META = "meta.json"
_NAME = re.compile(r"^step_(\d{8})$")


class CheckpointError(ParallelError):
    """A checkpoint that cannot be used here (another model, unreadable, missing)."""


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # pragma: no cover - ranks
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # pragma: no cover - ranks
        dist.barrier()


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns that it assumes one process when no group exists: that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def model_identity(model: nn.Module) -> dict[str, Any]:
    """What makes a checkpoint belong to ``model``: its spec hash (``None`` for a module
    without a spec) and ``{parameter name: shape}`` of the unwrapped model."""
    spec = getattr(model, "spec", None)
    digest = None
    if spec is not None and hasattr(spec, "to_dict"):
        from ..spec import spec_hash

        digest = spec_hash(spec)
    params = {name: list(p.shape) for name, p in model.named_parameters()}
    return {"spec_hash": digest, "params": params}


def check_identity(meta: Mapping[str, Any], identity: Mapping[str, Any], where: str) -> None:
    """Raise :class:`CheckpointError` naming the first difference between the checkpoint's
    model (``meta``) and this one (``identity``)."""
    theirs, ours = dict(meta["params"]), dict(identity["params"])
    missing = [n for n in ours if n not in theirs]
    extra = [n for n in theirs if n not in ours]
    problem = None
    if missing:
        problem = f"parameter {missing[0]!r} of this model is not in it"
    elif extra:
        problem = f"it holds parameter {extra[0]!r} that this model does not have"
    else:
        for name, shape in ours.items():
            if list(theirs[name]) != list(shape):
                problem = (
                    f"parameter {name!r} has shape {list(theirs[name])} there, "
                    f"{list(shape)} here"
                )
                break
    if problem is None and meta.get("spec_hash") != identity.get("spec_hash"):
        problem = (
            f"its spec hash {str(meta.get('spec_hash'))[:12]} differs from this model's "
            f"{str(identity.get('spec_hash'))[:12]}"
        )
    if problem is not None:
        raise CheckpointError(f"checkpoint {where} is of another model: {problem}")


def _complete(folder: Path) -> list[tuple[int, Path]]:
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _NAME.match(path.name)
            if match and (path / META).is_file():
                found.append((int(match[1]), path))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete checkpoint of the highest step in ``folder`` (``None`` if there is none)."""
    found = _complete(Path(folder))
    return found[-1][1] if found else None


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of checkpoint ``path``."""
    try:
        return json.loads((Path(path) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: cannot read {META} ({exc})") from None


def _rng_states(world: int) -> dict[str, bytes]:
    import torch.distributed as dist

    state = torch.get_rng_state().numpy().tobytes()
    states = [state] * world
    if world > 1:  # pragma: no cover - ranks
        states = [b""] * world
        dist.all_gather_object(states, state)
    return {f"rank{r}": s for r, s in enumerate(states)}


def save_checkpoint(
    folder: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any,
    base: nn.Module,
    extra: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Save a checkpoint of ``step`` collectively (every rank calls it); return its folder.

    ``model`` is what trains (plain, DDP or FSDP2), ``base`` the unwrapped model that names
    the checkpoint's identity; ``extra`` JSON values go into ``meta.json``. The ``keep``
    newest complete checkpoints are kept.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank, world = _dist()
    folder = Path(folder)
    final = folder / f"step_{step:08d}"
    partial = folder / f".{final.name}.partial"
    if rank == 0:
        for old in folder.glob(".step_*.partial"):
            shutil.rmtree(old, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {
        "model": model_sd,
        "optim": optim_sd,
        "sched": scheduler.state_dict(),
        "rng": _rng_states(world),
        "step": step,
    }
    with _single_process_quiet():
        dcp.save(state, checkpoint_id=str(partial), no_dist=world == 1)
    if rank == 0:
        meta = {"format": 1, "step": step, "world_size": world, **model_identity(base)}
        meta.update(extra or {})
        (partial / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for _, old in _complete(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any,
    base: nn.Module,
) -> dict[str, Any]:
    """Load checkpoint ``path`` into ``model``, ``optimizer`` and ``scheduler`` collectively
    and restore this rank's RNG state; returns its ``meta.json``. A checkpoint of another
    model is a :class:`CheckpointError` (nothing is loaded)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = read_meta(path)
    check_identity(meta, model_identity(base), str(path))
    rank, world = _dist()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    saved_world = int(meta.get("world_size", 1))
    state = {
        "model": model_sd,
        "optim": optim_sd,
        "sched": scheduler.state_dict(),
        "rng": {f"rank{r}": b"" for r in range(saved_world)},
        "step": 0,
    }
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(path), no_dist=world == 1)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    scheduler.load_state_dict(state["sched"])
    rng = state["rng"].get(f"rank{rank}")
    if rng and saved_world == world:  # another world size: keep the seeded state
        torch.set_rng_state(torch.frombuffer(bytearray(rng), dtype=torch.uint8))
    return meta
