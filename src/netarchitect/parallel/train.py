"""``netarchitect train``: train a spec, a registered model or a chosen model of ``design``.

One process by default; ``nproc > 1`` runs this module under ``torchrun`` (see
:mod:`.launch`), every rank executing :func:`run_training`. Each optimizer step takes a
global batch of ``batch_size × accumulate`` samples in a seeded order that every rank
computes alike; a data-parallel rank trains on its strided shard of each micro-batch
(what ``DistributedSampler`` does), and the loss is the sum over the shards divided by
the global count, so the loss curve of ``N`` processes equals that of one process.
AdamW (no decay on biases and norm weights), linear warm-up then cosine per step,
gradient clipping and accumulation, optional bf16 autocast and activation checkpointing;
DDP by default, FSDP2 / tensor parallel through :func:`~netarchitect.parallel.parallelize`,
or one pipeline stage per process (``pp``, :mod:`.train_pipeline`).
Checkpoints (:mod:`.checkpoint`) are written every ``checkpoint_every`` steps (every epoch
by default) and ``resume`` continues from the newest one with the same curve.

The output folder holds ``train.json`` (the settings), ``metrics.jsonl`` and ``loss.png``
(:mod:`.train_log`), ``checkpoints/``, and at the end ``spec.yaml``,
``weights.safetensors`` and ``result.json`` (the test metric, measured once).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import NetArchitectError, RegistryError
from .errors import ParallelError
from .pipeline import SCHEDULES

__all__ = [
    "KILL_ENV",
    "ModelSource",
    "TrainArgs",
    "build_model",
    "load_task",
    "prepare",
    "resolve_model",
    "run_training",
    "train",
]

#: Test hook: ``"RANK:STEP"`` makes that rank ``os._exit(17)`` right after optimizer step STEP.
KILL_ENV = "NETARCHITECT_TRAIN_KILL"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class TrainArgs:
    """The settings of a training run (JSON-able: they travel to every rank)."""

    model: str
    out: str
    task: str | None = None
    data: str | None = None
    trial: int | None = None
    nproc: int = 1
    fsdp: bool = False
    tp: int = 1
    pp: int = 1
    pp_schedule: str = "1f1b"
    checkpointing: bool = False
    amp: str | None = None
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    clip: float = 1.0
    accumulate: int = 1
    label_smoothing: float = 0.0
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 0
    keep: int = 2
    dist_timeout: float = 300.0
    device: str = "auto"

    def __post_init__(self) -> None:
        checks = {
            "nproc": self.nproc >= 1,
            "tp": self.tp >= 1,
            "pp": self.pp >= 1,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup": self.warmup >= 0,
            "clip": self.clip >= 0,
            "accumulate": self.accumulate >= 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "checkpoint_every": self.checkpoint_every >= 0,
            "keep": self.keep >= 1,
            "dist_timeout": self.dist_timeout > 0,
            "amp": self.amp in (None, "bf16"),
            "pp_schedule": self.pp_schedule in SCHEDULES,
            "device": self.device in ("auto", "cpu", "cuda"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            name = bad[0]
            raise ParallelError(f"--{name.replace('_', '-')}: invalid value {getattr(self, name)!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainArgs:
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


# ------------------------------------------------------------------------- model and data


@dataclass(frozen=True)
class ModelSource:
    """What to train: ``kind`` is ``spec`` (a file), ``folder`` (spec.yaml + weights of a chosen
    model), or ``registered`` (a model name); a run directory resolves to one of its folders."""

    kind: str
    ref: str
    weights: str | None = None
    task: str | None = None  # the run directory's task and data, the default for --task
    data: str | None = None


def _run_dir_model(path: Path, trial: int | None) -> ModelSource:
    from ..search.config import RunConfig
    from ..search.final import model_dir

    config = RunConfig.load(path)
    if trial is None:
        from ..search.report import load_run_study

        _, study = load_run_study(path)
        final = study.user_attrs.get("final_models", {})
        entries = [e for e in final.values() if (path / e["dir"] / "spec.yaml").is_file()]
        if not entries:
            raise ParallelError(f"{path}: the run has no chosen models yet (run design to the end)")
        best = max(entries, key=lambda e: (e.get("val_acc") or -math.inf, -e["trial"]))
        folder = path / best["dir"]
    else:
        folder = model_dir(path, trial)
        if not (folder / "spec.yaml").is_file():
            chosen = sorted(p.name for p in (path / "models").glob("trial_*"))
            raise ParallelError(
                f"--trial {trial}: {path} has no chosen model {folder.name}; it has "
                f"{', '.join(chosen) or 'none'}"
            )
    return ModelSource("folder", str(folder), _weights(folder), config.task, config.data)


def _weights(folder: Path) -> str | None:
    path = folder / "weights.safetensors"
    return str(path) if path.is_file() else None


def resolve_model(ref: str, *, trial: int | None = None) -> ModelSource:
    """Sort the MODEL argument: a run directory (its best chosen model by validation metric,
    or ``trial``), a model folder, a spec file, or a registered model name."""
    path = Path(ref)
    if path.is_dir():
        if (path / "run.json").is_file():
            return _run_dir_model(path, trial)
        if (path / "spec.yaml").is_file():
            return ModelSource("folder", str(path), _weights(path))
        raise ParallelError(
            f"{ref}: a folder without run.json (a design run) or spec.yaml (a chosen model)"
        )
    if path.is_file():
        return ModelSource("spec", str(path))
    if path.suffix in (".yaml", ".yml", ".json") or len(path.parts) > 1:
        raise ParallelError(f"spec file or folder {ref!r} does not exist")
    from ..registry import get_model_builder

    try:
        get_model_builder(ref)
    except RegistryError as exc:
        raise ParallelError(
            f"{ref!r} is not a spec file, a model folder, a run directory or a registered "
            f"model ({str(exc).strip(chr(34))})"
        ) from None
    return ModelSource("registered", ref)


def load_task(args: TrainArgs, source: ModelSource | None = None) -> Any:
    """The data set: ``--data``, else ``--task``, else the run directory's, else digits. Only
    tensor tasks (classification, regression, multi-label) can be trained here."""
    from ..search.tasks import get_task, load_npz_task

    data = args.data or (None if args.task else source and source.data)
    name = args.task or (source and source.task) or "digits"
    task = load_npz_task(data) if data else get_task(name)
    if not all(hasattr(task, a) for a in ("x_train", "y_train", "kind")):
        raise ParallelError(
            f"task {task.name!r}: train takes tensor data sets (classification, regression, "
            f"multi-label; built in or --data FILE.npz), not {type(task).__name__}"
        )
    return task


def build_model(source: ModelSource, task: Any, *, seed: int, device: Any = None) -> nn.Module:
    """The model of ``source`` for ``task`` (weights from ``seed``, or the folder's weights),
    checked to map the task's inputs to its outputs (on ``meta``, nothing allocated)."""
    from ..factory import create_model
    from ..network import build
    from ..spec import load_spec

    if source.kind == "registered":
        extra = {"in_chans": task.input_shape[0]} if len(task.input_shape) == 3 else {}
        try:
            model = create_model(
                source.ref, seed=seed, device=device, num_classes=task.num_classes, **extra
            )
        except TypeError as exc:  # a builder without num_classes / in_chans
            raise ParallelError(
                f"model {source.ref} cannot be built for task {task.name} ({exc}); "
                "train a spec with the task's input and output shapes instead"
            ) from None
    else:
        spec = load_spec(Path(source.ref) / "spec.yaml" if source.kind == "folder" else source.ref)
        model = build(spec, seed=seed, device=device)
        if source.weights and str(device) != "meta":
            from ..weights import load_weights

            load_weights(model, source.weights)
    _check_fits(model, task, source.ref)
    return model


def _check_fits(model: nn.Module, task: Any, name: str) -> None:
    want = (2, task.num_classes)
    try:
        meta_model = model if _is_meta(model) else _meta_copy(model)
        with torch.no_grad():
            out = meta_model.eval()(torch.empty((2, *task.input_shape), device="meta"))
        shape = tuple(out.shape)
    except (RuntimeError, ValueError, NetArchitectError) as exc:
        raise ParallelError(
            f"model {name} cannot take the task's inputs {list(task.input_shape)}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    if shape != want:
        raise ParallelError(
            f"model {name} outputs shape {list(shape[1:])} per sample; task {task.name} needs "
            f"[{task.num_classes}]"
        )


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _meta_copy(model: nn.Module) -> nn.Module:
    import copy

    with torch.device("meta"):
        clone = copy.deepcopy(model).to("meta")
    return clone


# ----------------------------------------------------------------------------- checks


def prepare(args: TrainArgs) -> tuple[ModelSource, Any, nn.Module]:
    """Check everything before any process starts or any file is written: the model, the
    data set, that the model fits the task, the process layout, the output folder and (with
    ``resume``) that its checkpoint is of this model. Returns the source, the task and the
    model built on ``meta``."""
    from .checkpoint import check_identity, latest_checkpoint, model_identity, read_meta
    from .mesh import mesh_shape

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ParallelError("--device cuda: no CUDA device is available here")
    source = resolve_model(args.model, trial=args.trial)
    task = load_task(args, source)
    model = build_model(source, task, seed=args.seed, device="meta")
    sizes = mesh_shape(args.nproc, tp=args.tp, pp=args.pp)
    if args.pp > 1:
        from .train_pipeline import check_pipeline

        check_pipeline(args, model, tuple(task.input_shape), sizes)
    if args.tp > 1:
        from .plan import derive_plan

        derive_plan(model, tp=args.tp, fsdp=args.fsdp)
    n_train = len(task.y_train)
    step_batch = args.batch_size * args.accumulate
    if step_batch > n_train:
        raise ParallelError(
            f"--batch-size {args.batch_size} x --accumulate {args.accumulate} = {step_batch} "
            f"is more than the {n_train} training samples of {task.name}"
        )
    if args.batch_size < sizes["dp"]:
        raise ParallelError(
            f"--batch-size {args.batch_size} is smaller than the {sizes['dp']} data-parallel ranks"
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ParallelError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not args.resume:
            raise ParallelError(
                f"--out {out}: exists and is not empty; pass --resume to continue its run "
                "or choose a new folder"
            )
        latest = latest_checkpoint(out / CHECKPOINTS)
        if latest is not None:
            check_identity(read_meta(latest), model_identity(model), str(latest))
    return source, task, model


def train(args: TrainArgs, console: Any = None) -> dict[str, Any]:
    """Check ``args`` (:func:`prepare`), then train in this process or under ``torchrun``;
    returns the result (``result.json``)."""
    prepare(args)
    if args.nproc == 1:
        return run_training(args, console)
    from .launch import launch

    launch(args, console)
    return json.loads((Path(args.out) / "result.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- training


@dataclass
class _Layout:
    """The process group as the loop sees it."""

    rank: int
    world: int
    dp_rank: int
    dp_size: int
    dp_group: Any
    device: torch.device


def _init_distributed(args: TrainArgs) -> _Layout:
    import torch.distributed as dist

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():  # pragma: no cover - torchrun ranks
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=args.dist_timeout)
        )
    rank, world = 0, 1
    if dist.is_available() and dist.is_initialized():  # pragma: no cover - ranks
        rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:  # pragma: no cover - no CUDA in the test machines
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if world != args.nproc:
        raise ParallelError(f"--nproc {args.nproc} but {world} processes are running")
    return _Layout(rank, world, rank, world, None, device)


def _wrap(base: nn.Module, args: TrainArgs, layout: _Layout) -> nn.Module:
    """DDP, or FSDP2 / tensor parallel through ``parallelize`` (sets the dp fields); one
    process trains the plain model."""
    if layout.world == 1:
        return base
    return _distribute(base, args, layout)  # pragma: no cover - ranks


def _distribute(base: nn.Module, args: TrainArgs, layout: _Layout) -> nn.Module:  # pragma: no cover
    """:func:`_wrap` over more than one process (run in the ranks of the 2-process tests)."""
    if args.fsdp or args.tp > 1:
        from . import parallelize
        from .mesh import make_mesh
        from .plan import derive_plan

        mesh = make_mesh(layout.world, tp=args.tp, device_type=layout.device.type)
        dp = mesh["dp"]
        layout.dp_rank, layout.dp_size = dp.get_local_rank(), dp.size()
        layout.dp_group = dp.get_group()
        fsdp = args.fsdp or args.tp > 1  # parallelize combines TP with FSDP2, not DDP
        return parallelize(base, mesh, derive_plan(base, tp=args.tp, fsdp=fsdp))
    from torch.nn.parallel import DistributedDataParallel

    ids = [layout.device.index] if layout.device.type == "cuda" else None
    return DistributedDataParallel(base, device_ids=ids)


def _pipeline(base: nn.Module, args: TrainArgs, layout: _Layout, task: Any,
              scoring: Any) -> Any:  # pragma: no cover - ranks
    """This rank's pipeline stage of ``base`` (:mod:`.train_pipeline`); the batch is not
    sharded (every stage sees every sample)."""
    from .train_pipeline import PipelineTraining

    def loss_fn(out: Tensor, target: Tensor) -> Tensor:
        return scoring.loss(out.float(), target, args.label_smoothing)

    layout.dp_rank, layout.dp_size = 0, 1
    example = task.x_train[:2].to(layout.device)
    return PipelineTraining(base, example, stages=args.pp, microbatches=args.pp * args.accumulate,
                            schedule=args.pp_schedule, loss_fn=loss_fn, device=layout.device)


def _autocast(args: TrainArgs, device: torch.device) -> Any:
    if args.amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The sample order of ``epoch``: the same in every rank and every resumed run."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _kill_step(rank: int) -> int | None:
    value = os.environ.get(KILL_ENV)
    if not value:
        return None
    who, step = value.split(":")
    return int(step) if int(who) == rank else None


def _all_reduce(value: Tensor, layout: _Layout) -> Tensor:
    if layout.dp_size > 1:  # pragma: no cover - ranks
        import torch.distributed as dist

        dist.all_reduce(value, group=layout.dp_group)
    return value


def _clip_grads(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` and return it (``max_norm`` 0: no
    clipping, ``nan`` returned).

    Sharded (DTensor) gradients may live on different meshes (tensor-parallel weights on
    ``(dp, tp)``, the rest on ``dp``), which ``clip_grad_norm_`` cannot stack: their norms
    are reduced one by one to plain tensors first.
    """
    if max_norm <= 0:
        return math.nan
    if not any(hasattr(p, "full_tensor") for p in params):
        return float(nn.utils.clip_grad_norm_(params, max_norm))
    return _clip_sharded(params, max_norm)  # pragma: no cover - ranks


def _clip_sharded(params: list[nn.Parameter], max_norm: float) -> float:  # pragma: no cover
    """:func:`_clip_grads` of DTensor gradients (run in the 2-process tests' ranks)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = []
    for grad in grads:
        norm = torch.linalg.vector_norm(grad)
        norms.append(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    total = float(torch.linalg.vector_norm(torch.stack(norms)))
    scale = min(1.0, max_norm / (total + 1e-6))
    if scale < 1.0:
        for grad in grads:
            grad.mul_(scale)
    return total


@contextlib.contextmanager
def _progress(console: Any, total: int, done: int) -> Iterator[Any]:
    if console is None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[loss]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        yield bar, bar.add_task("training", total=total, completed=done, loss="")


class _Run:
    """One rank's training state and loop."""

    def __init__(self, args: TrainArgs, layout: _Layout, console: Any) -> None:
        from ..search.scoring import get_scoring
        from ..search.trainer import lr_schedule, param_groups
        from .train_log import MetricsLog

        self.args, self.layout, self.console = args, layout, console if layout.rank == 0 else None
        self.out = Path(args.out)
        self.source = resolve_model(args.model, trial=args.trial)
        self.task = load_task(args, self.source)
        self.scoring = get_scoring(self.task.kind)
        torch.manual_seed(args.seed)
        self.base = build_model(self.source, self.task, seed=args.seed, device=layout.device)
        if args.checkpointing:
            from ..optimize.checkpointing import apply_checkpointing

            apply_checkpointing(self.base, "blocks")
        self.pipe: Any = None
        if args.pp > 1:
            self.pipe = _pipeline(self.base, args, layout, self.task, self.scoring)
            self.model = self.pipe.module
        else:
            self.model = _wrap(self.base, args, layout)
        self.opt = torch.optim.AdamW(
            param_groups(self.model, args.weight_decay), lr=args.lr, foreach=True
        )
        n = len(self.task.y_train)
        self.steps_per_epoch = n // (args.batch_size * args.accumulate)  # drop the last partial
        self.total = self.steps_per_epoch * args.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_schedule(min(args.warmup, self.total), self.total)
        )
        self.log = MetricsLog(self.out / METRICS, enabled=layout.rank == 0)
        self.x = self.task.x_train.to(layout.device)
        self.y = self.task.y_train.to(layout.device)
        self.step = 0
        self.last_val = (math.nan, math.nan)

    # ---------------------------------------------------------------- checkpoints

    def resume(self) -> None:
        from .checkpoint import latest_checkpoint, load_checkpoint

        latest = latest_checkpoint(self.out / CHECKPOINTS) if self.args.resume else None
        if latest is None:  # a fresh start: no records of an earlier, uncheckpointed try
            self.log.truncate_after(0)
            return
        meta = load_checkpoint(
            latest, self.model, self.opt, scheduler=self.sched, base=self.base
        )
        self.step = int(meta["step"])
        self.log.truncate_after(self.step)
        self._say(f"resumed from {latest} (step {self.step})")

    def save(self) -> None:
        from .checkpoint import save_checkpoint

        save_checkpoint(
            self.out / CHECKPOINTS, self.step, self.model, self.opt,
            scheduler=self.sched, base=self.base, keep=self.args.keep,
            extra={"epoch": self.step // max(1, self.steps_per_epoch)},
        )

    # ---------------------------------------------------------------- the loop

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False)

    def _micro_batches(self, order: Tensor, step_in_epoch: int) -> list[Tensor]:
        b, a = self.args.batch_size, self.args.accumulate
        idx = order[step_in_epoch * b * a : (step_in_epoch + 1) * b * a]
        return list(idx.split(b))

    def train_step(self, order: Tensor, step_in_epoch: int) -> tuple[float, float]:
        """One optimizer step; returns (global mean loss, gradient norm)."""
        micro = self._micro_batches(order, step_in_epoch)
        self.model.train()
        if self.pipe is None:
            loss, norm = self._data_parallel_step(micro)
        else:  # pragma: no cover - ranks
            idx = torch.cat(micro)
            with _autocast(self.args, self.layout.device):
                loss = self.pipe.step(self.x[idx], self.y[idx])
            norm = self.pipe.clip(self.args.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return loss, norm

    def _data_parallel_step(self, micro: list[Tensor]) -> tuple[float, float]:
        """Forward and backward of the micro-batches, each rank on its shard; returns (global
        mean loss, clipped gradient norm)."""
        n_step = sum(len(m) for m in micro)
        lay = self.layout
        loss_sum = torch.zeros((), device=lay.device, dtype=torch.float64)
        for k, batch in enumerate(micro):
            shard = batch[lay.dp_rank :: lay.dp_size]
            sync = k == len(micro) - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with _autocast(self.args, lay.device):
                    out = self.model(self.x[shard])
                loss = self.scoring.loss(out.float(), self.y[shard], self.args.label_smoothing)
                total = loss * len(shard)
                (total * (lay.dp_size / n_step)).backward()
            loss_sum += total.detach().double()
        norm = _clip_grads(list(self.model.parameters()), self.args.clip)
        return float(_all_reduce(loss_sum, lay)) / n_step, norm

    def evaluate(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        from torch.nn.parallel import DistributedDataParallel

        from ..search.trainer import evaluate

        module = self.model
        if isinstance(module, DistributedDataParallel):  # pragma: no cover - ranks
            # evaluate the replica itself
            module = module.module
        if self.pipe is not None:  # pragma: no cover - ranks
            self.pipe.sync_weights()  # every rank evaluates the whole network
            module = self.base
        with _autocast(self.args, self.layout.device):
            return evaluate(module, x.to(self.layout.device), y.to(self.layout.device),
                            kind=self.task.kind)

    def loop(self) -> float:
        """Train to the end; returns the mean training loss of the last epoch."""
        args, spe = self.args, self.steps_per_epoch
        kill_at = _kill_step(self.layout.rank)
        every = args.checkpoint_every or spe
        epoch_losses: list[float] = []
        with _progress(self.console, self.total, self.step) as bar:
            for epoch in range(self.step // spe, args.epochs):
                order = _epoch_order(len(self.y), args.seed, epoch).to(self.layout.device)
                epoch_losses = self._logged_losses(epoch + 1)  # resumed mid-epoch
                for s in range(self.step - epoch * spe, spe):
                    lr = self.sched.get_last_lr()[0]
                    loss, norm = self.train_step(order, s)
                    self.step += 1
                    epoch_losses.append(loss)
                    self.log.write({"type": "step", "step": self.step, "epoch": epoch + 1,
                                    "loss": loss, "lr": lr, "grad_norm": norm})
                    if bar is not None:
                        bar[0].update(bar[1], advance=1, loss=f"loss {loss:.4f}")
                    if kill_at == self.step:  # pragma: no cover - ranks
                        os._exit(17)
                    if self.step % every == 0 or self.step == self.total:
                        self.save()
                self._end_epoch(epoch, epoch_losses)
        return sum(epoch_losses) / max(1, len(epoch_losses))

    def _logged_losses(self, epoch: int) -> list[float]:
        from .train_log import read_metrics

        if not self.log.enabled or self.step % self.steps_per_epoch == 0:
            return []
        return [r["loss"] for r in read_metrics(self.log.path)
                if r.get("type") == "step" and r["epoch"] == epoch and r["step"] <= self.step]

    def _end_epoch(self, epoch: int, losses: list[float]) -> None:
        metric, val_loss = self.last_val = self.evaluate(self.task.x_val, self.task.y_val)
        train_loss = sum(losses) / len(losses) if losses else None
        self.log.write({"type": "epoch", "epoch": epoch + 1, "step": self.step,
                        "train_loss": train_loss, "val_loss": val_loss, "val_metric": metric})
        shown = "–" if train_loss is None else f"{train_loss:.4f}"
        self._say(
            f"epoch {epoch + 1}/{self.args.epochs}  step {self.step}/{self.total}  "
            f"loss {shown}  val {self.scoring.label} {self.scoring.format(metric)}  "
            f"val loss {val_loss:.4f}"
        )

    # ---------------------------------------------------------------- the end

    def finish(self, seconds: float) -> dict[str, Any]:
        """Test once, write the weights, the spec, the plot and ``result.json`` (rank 0)."""
        from .._io import atomic_write_text
        from .train_log import plot_loss, read_metrics

        test_metric, test_loss = self.evaluate(self.task.x_test, self.task.y_test)
        if math.isnan(self.last_val[1]):  # a resumed run that was already complete
            self.last_val = self.evaluate(self.task.x_val, self.task.y_val)
        val_metric, val_loss = self.last_val
        state = self._full_state()
        result = {
            "model": self.args.model, "task": self.task.name, "metric": self.scoring.name,
            "test_metric": test_metric, "test_loss": test_loss, "val_metric": val_metric,
            "val_loss": val_loss, "steps": self.step, "epochs": self.args.epochs,
            "world_size": self.layout.world, "seconds": seconds,
        }
        if self.layout.rank == 0:
            self._save_model(state)
            plot_loss(read_metrics(self.out / METRICS), self.out / "loss.png",
                      title=f"{Path(self.args.model).name} on {self.task.name}")
            atomic_write_text(self.out / "result.json", json.dumps(result, indent=1) + "\n")
            self._say(
                f"test {self.scoring.label} {self.scoring.format(test_metric)} "
                f"(loss {test_loss:.4f}); files in {self.out}"
            )
        return result

    def _full_state(self) -> dict[str, Tensor]:
        if self.layout.world == 1:
            return self.base.state_dict()
        if self.pipe is not None:  # pragma: no cover - ranks
            self.pipe.sync_weights()
            return self.base.state_dict()
        return _gathered_state(self.model)  # pragma: no cover - ranks

    def _save_model(self, state: dict[str, Tensor]) -> None:
        from ..spec import save_spec
        from ..weights import save_weights

        final = build_model(self.source, self.task, seed=self.args.seed, device="cpu")
        final.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
        save_weights(final, self.out / "weights.safetensors")
        spec = getattr(final, "spec", None)
        if spec is not None:
            save_spec(spec, self.out / "spec.yaml")


def _gathered_state(model: nn.Module) -> dict[str, Tensor]:  # pragma: no cover - ranks
    """The full (unsharded) state dict of a DDP/FSDP2/TP model, on the CPU, on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def run_training(args: TrainArgs, console: Any = None) -> dict[str, Any]:
    """Train as one rank (the only one when no process group is set up); returns the result.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised here (gloo on
    CPU, nccl with CUDA, ``dist_timeout`` seconds per collective) and destroyed at the end.
    """
    import torch.distributed as dist

    start = time.perf_counter()
    owns_group = not (dist.is_available() and dist.is_initialized())
    layout = _init_distributed(args)
    try:
        if layout.rank == 0:
            from .._io import atomic_write_text

            Path(args.out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args.out) / "train.json", json.dumps(asdict(args), indent=1))
        run = _Run(args, layout, console)
        run.resume()
        run.loop()
        return run.finish(time.perf_counter() - start)
    finally:
        if owns_group and dist.is_available() and dist.is_initialized():  # pragma: no cover - ranks
            dist.destroy_process_group()


def _rank_main(argv: list[str] | None = None) -> int:  # pragma: no cover - run by torchrun
    """The ``torchrun`` entry: ``python -m netarchitect.parallel.train --config FILE``."""
    from .launch import rank_entry

    return rank_entry(argv)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(_rank_main())
