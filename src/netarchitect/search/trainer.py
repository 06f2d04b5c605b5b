"""A small, correct training loop for candidate networks.

AdamW (no weight decay on biases and normalisation weights), linear warm-up then
cosine decay per step, label smoothing, optional augmentation, early stopping
on validation accuracy (the best epoch's weights are restored), and an
``on_epoch`` hook through which a search stops poor trials. For a given seed the
result is deterministic: shuffling, augmentation and dropout draw from seeded
generators, and nothing reads the test split.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NetArchitectError
from ..losses import auxiliary_loss, auxiliary_modules
from .scoring import SCORINGS, Scoring, get_scoring

__all__ = [
    "TrainConfig",
    "TrainResult",
    "augment_batch",
    "evaluate",
    "fit_loop",
    "lr_schedule",
    "param_groups",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; ``augment`` in [0, 1] scales noise and random 1-pixel shifts."""

    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 20
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    augment: float = 0.0
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 1,
            "epochs": self.epochs >= 1,
            "warmup_epochs": self.warmup_epochs >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "augment": 0 <= self.augment <= 1,
            "patience": self.patience >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise NetArchitectError(f"train.{name}: invalid value {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a (sampled) mapping, ignoring ``None``; integers are coerced where needed."""
        known = {f.name: f.type for f in fields(cls)}
        merged = {k: v for k, v in {**values, **overrides}.items() if v is not None and k in known}
        for key in ("batch_size", "epochs", "warmup_epochs", "patience", "seed"):
            if key in merged:
                merged[key] = int(merged[key])
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What training produced: best validation accuracy/loss, the curve, why it stopped."""

    val_acc: float
    val_loss: float
    best_epoch: int
    epochs_run: int
    seconds: float
    curve: list[float] = field(default_factory=list)
    stopped: str = "completed"  # "completed", "early" (patience) or "pruned" (on_epoch said stop)


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1024,
    kind: str = "classification",
) -> tuple[float, float]:
    """The metric of the task ``kind`` (accuracy for classification) and the mean loss of
    ``model`` on ``(x, y)``, in eval mode."""
    scoring = get_scoring(kind)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        out = out.float()
        loss = scoring.loss(out, y, 0.0).item()
    model.train(was_training)
    return scoring.metric(out, y), loss


def augment_batch(x: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Gaussian noise (std ``0.2·strength``); images (B, C, H, W) are also shifted by up to one
    pixel with probability ``strength`` (edges replicated)."""
    if strength <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator) * (0.2 * strength)
    if x.dim() == 4:
        b, _, h, w = x.shape
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, C, H+2, W+2)
        offset = torch.randint(0, 3, (b, 2), generator=generator)  # 1 = no shift
        offset[torch.rand(b, generator=generator) >= strength] = 1
        rows = torch.arange(h)[None, :] + offset[:, :1]  # (B, H)
        cols = torch.arange(w)[None, :] + offset[:, 1:]  # (B, W)
        batch = torch.arange(b)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
    return x + noise


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and kernels, none on biases and norm weights."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup`` steps, then cosine to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def fit_loop(
    model: nn.Module,
    cfg: TrainConfig,
    *,
    steps_per_epoch: int,
    batches: Callable[[torch.Generator], Iterable[tuple[Any, Tensor]]],
    forward: Callable[[nn.Module, Any], Tensor],
    validate: Callable[[nn.Module], tuple[float, float]],
    scoring: Scoring = SCORINGS["classification"],
    on_epoch: Callable[[int, float], bool] | None = None,
) -> TrainResult:
    """The training loop of every task: AdamW, warm-up then cosine per step, validation each
    epoch, early stopping, best weights restored — on any kind of batch. Blocks' auxiliary
    losses (:func:`netarchitect.losses.auxiliary_loss`) are added to the task's.

    ``batches(generator)`` yields one epoch of ``(inputs, targets)``; ``forward(model,
    inputs)`` gives the outputs the ``scoring`` loss takes; ``validate(model)`` the validation
    (metric, loss). ``on_epoch(epoch, metric)`` returning ``True`` stops (a pruned trial).
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)  # dropout and other in-model randomness
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_schedule(cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch)
    )
    best = (-math.inf, math.inf)
    best_state, best_epoch, curve, stopped, since_best = None, 0, [], "completed", 0
    extra = auxiliary_modules(model)  # blocks with their own loss terms (prototypes, concepts)
    for epoch in range(cfg.epochs):
        model.train()
        for inputs, targets in batches(gen):
            loss = scoring.loss(forward(model, inputs), targets, cfg.label_smoothing)
            if extra:
                loss = loss + auxiliary_loss(model, targets, extra)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc, val_loss = validate(model)
        if not (math.isfinite(val_loss) and math.isfinite(acc)):  # diverged
            acc = 0.0 if scoring.percent else -1.0
        curve.append(acc)
        if (acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch, since_best = (acc, val_loss), epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if on_epoch is not None and on_epoch(epoch, acc):
            stopped = "pruned"
            break
        if since_best >= cfg.patience:
            stopped = "early"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(
        best[0], best[1], best_epoch, len(curve), time.perf_counter() - start, curve, stopped
    )


def train(
    model: nn.Module,
    data: Any,
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[int, float], bool] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.x_train/y_train``, validate on ``data.x_val/y_val`` each epoch,
    with the loss and metric of ``data.kind`` (classification when absent); see
    :func:`fit_loop`. ``cfg.augment`` adds noise (and pixel shifts to images)."""
    kind = getattr(data, "kind", "classification")
    x, y = data.x_train, data.y_train

    def batches(gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            yield augment_batch(x[idx], cfg.augment, gen), y[idx]

    return fit_loop(
        model,
        cfg,
        steps_per_epoch=math.ceil(len(x) / cfg.batch_size),
        batches=batches,
        forward=lambda m, xb: m(xb),
        validate=lambda m: evaluate(m, data.x_val, data.y_val, kind=kind),
        scoring=get_scoring(kind),
        on_epoch=on_epoch,
    )
