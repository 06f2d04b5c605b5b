"""Search tasks: an open registry of what ``design`` can search for, plus ``.npz`` files.

A task is any object with the :class:`SearchTask` methods: the search asks it whether a
candidate fits (``check_model``), to train and validate one (``fit``), to test a chosen
one once (``test``), for a batch for zero-cost proxies and for the inputs that costs are
measured on. :class:`Task` is tensor classification: ``digits`` (scikit-learn's bundled
8×8 digits, 10 classes), ``moons`` (``make_moons``, 2 classes) and ``--data`` files,
split into stratified train / validation / test parts with a fixed seed (the test part is
the same in every run and never used during a search); features are standardised with
training statistics only. Other task kinds (graphs, few-shot episodes) register
themselves from their own modules, listed in :data:`TASK_MODULES`.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from ..errors import NetArchitectError
from ..registry import suggest

if TYPE_CHECKING:
    from torch import nn

    from ..spec import NetworkSpec
    from .trainer import TrainConfig, TrainResult

__all__ = [
    "DataError",
    "SearchTask",
    "Task",
    "get_task",
    "list_tasks",
    "load_npz_task",
    "register_task",
    "task_from_arrays",
]

SPLIT_SEED = 0
_OUTPUT_NAMES = {
    "classification": "a classifier of {n} classes",
    "regression": "a regressor of {n} target(s)",
    "multilabel": "a multi-label classifier of {n} labels",
}
_TASKS: dict[str, Callable[[], SearchTask]] = {}
#: Modules that register further task kinds, imported on the first registry lookup.
TASK_MODULES = ("netarchitect.search.graph_task", "netarchitect.meta.fewshot_task")


class DataError(NetArchitectError, ValueError):
    """A data set cannot be used (missing arrays, NaNs, a single class, ...)."""


class SearchTask(Protocol):
    """What the search needs of a task (``val_acc``/``test`` metrics: higher is better)."""

    name: str
    num_classes: int  # the candidate's output width: ``$num_classes`` in a space file
    default_space: str  # a space file packaged in ``netarchitect/search``
    input_shape: tuple[int, ...]  # per-sample shape of the spec input ``x``

    def describe(self) -> str:
        """One line for the log and the report."""
        ...

    def check_model(self, spec: NetworkSpec) -> None:
        """Raise :class:`~netarchitect.errors.SpecError` if ``spec`` cannot serve the task."""
        ...

    def fit(
        self, model: nn.Module, cfg: TrainConfig, *, on_epoch: Callable[[int, float], bool] | None
    ) -> TrainResult:
        """Train on the train part, validate every epoch (``on_epoch(epoch, metric)`` returning
        ``True`` stops), end with the best epoch's weights."""
        ...

    def test(self, model: nn.Module) -> tuple[float, float]:
        """(metric, loss) on the test part."""
        ...

    def proxy_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """``n`` training inputs for zero-cost proxies (``None``: proxies do not apply)."""
        ...

    def cost_inputs(self) -> dict[str, Any] | None:
        """Keyword inputs of a representative call to measure MACs and latency on (``None``:
        one sample of the spec's declared input shapes)."""
        ...


@dataclass(frozen=True)
class Task:
    """A classification data set split three ways; tensors are float32 features and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int  # output width: classes, regression targets or labels
    default_space: str = "mlp_space.yaml"
    kind: str = "classification"  # or "regression" (float y (N, k)), "multilabel" (0/1 y (N, k))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape (no batch dimension)."""
        return tuple(self.x_train.shape[1:])

    def describe(self) -> str:
        shape = "×".join(map(str, self.input_shape))
        what = {
            "classification": "classes",
            "regression": "regression target(s)",
            "multilabel": "labels (multi-label)",
        }[self.kind]
        return (
            f"{self.name}: {self.num_classes} {what}, inputs {shape}, "
            f"{len(self.y_train)} train / {len(self.y_val)} val / {len(self.y_test)} test"
        )

    def check_model(self, spec: NetworkSpec) -> None:
        """One output of per-sample shape ``(num_classes,)``."""
        from .constraints import check_classifier

        check_classifier(spec, self.num_classes, what=_OUTPUT_NAMES[self.kind])

    def fit(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        on_epoch: Callable[[int, float], bool] | None = None,
    ) -> TrainResult:
        """:func:`~netarchitect.search.trainer.train` on this task."""
        from .trainer import train

        return train(model, self, cfg, on_epoch=on_epoch)

    def test(self, model: nn.Module) -> tuple[float, float]:
        """The metric (accuracy, R² or macro-F1) and the mean loss on the test part."""
        from .trainer import evaluate

        return evaluate(model, self.x_test, self.y_test, kind=self.kind)

    def proxy_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training samples drawn with ``generator``."""
        return self.x_train[torch.randperm(len(self.x_train), generator=generator)[:n]]

    def cost_inputs(self) -> None:
        """Costs are measured on one sample of the declared input shape (``None``)."""


TaskFactory = Callable[[], Any]


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a zero-argument function returning a :class:`SearchTask` under ``name``."""

    def decorate(fn: TaskFactory) -> TaskFactory:
        _TASKS[name] = fn
        return fn

    return decorate


def _load_task_modules() -> None:
    for module in TASK_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    _load_task_modules()
    return sorted(_TASKS)


def get_task(name: str) -> SearchTask:
    """The registered task ``name`` (a :class:`DataError` with suggestions if unknown)."""
    _load_task_modules()
    if name not in _TASKS:
        raise DataError(
            f"unknown task {name!r}{suggest(name, list(_TASKS))}; "
            f"built in: {', '.join(list_tasks())}"
        )
    return _TASKS[name]()


def _check_x(x: np.ndarray, n: int, where: str) -> None:
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{where}: X must have shape (N, features...) with N > 0, got {x.shape}")
    if len(x) != n:
        raise DataError(f"{where}: X has {len(x)} samples but y has {n}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: X must be real numbers, got dtype {x.dtype}")
    bad = ~np.isfinite(x.astype(np.float64))
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{where}: X contains {int(bad.sum())} NaN or infinite value(s) "
            f"(first in sample {first})"
        )


def _kind(y: np.ndarray, where: str) -> str:
    """``classification`` for integer labels (N,), ``regression`` for other real (N,) or (N, k)
    targets, ``multilabel`` for 0/1 matrices (N, k)."""
    if y.ndim not in (1, 2) or y.shape[-1] == 0:
        raise DataError(
            f"{where}: y must be labels (N,), regression targets (N,) or (N, k), or 0/1 "
            f"multi-label targets (N, k); got shape {y.shape}"
        )
    if y.dtype == np.bool_:
        return "multilabel" if y.ndim == 2 else "classification"
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        if y.ndim == 1:
            return "classification"  # string labels
        raise DataError(f"{where}: y must be real numbers, got dtype {y.dtype}")
    y64 = y.astype(np.float64)
    if not np.all(np.isfinite(y64)):
        first = int(np.argwhere(~np.isfinite(y64))[0][0])
        raise DataError(
            f"{where}: y contains {int((~np.isfinite(y64)).sum())} NaN or infinite value(s) "
            f"(first in sample {first})"
        )
    if y.ndim == 2:
        return "multilabel" if np.isin(y64, (0.0, 1.0)).all() else "regression"
    if np.issubdtype(y.dtype, np.floating) and not np.all(y64 == np.round(y64)):
        return "regression"
    return "classification"


def _class_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Labels remapped to ``0..K-1``; at least two classes of three samples each."""
    classes, labels, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"{where}: y has a single class ({classes[0].item()!r}); "
            "classification needs at least two"
        )
    if counts.min() < 3:
        rare = classes[counts.argmin()].item()
        raise DataError(
            f"{where}: class {rare!r} has {counts.min()} sample(s); "
            "each class needs at least 3 (train/val/test)"
        )
    return labels.astype(np.int64)


def _check_targets(y: np.ndarray, kind: str, where: str) -> None:
    """Multi-label columns need positives and negatives; regression targets must vary."""
    if kind == "multilabel":
        positives = y.astype(np.float64).sum(0)
        dead = np.flatnonzero((positives == 0) | (positives == len(y)))
        if dead.size:
            raise DataError(
                f"{where}: label column {int(dead[0])} is "
                f"{'never' if positives[dead[0]] == 0 else 'always'} set; "
                "every label needs positive and negative samples"
            )
    elif kind == "regression":
        y2 = y.reshape(len(y), -1).astype(np.float64)
        flat = np.flatnonzero(y2.std(0) == 0)
        if flat.size:
            raise DataError(f"{where}: regression target {int(flat[0])} is constant")


def _split_sizes(n: int, test: float) -> tuple[int, int]:
    """(train, test) sizes of scikit-learn's ``train_test_split`` of ``n`` samples."""
    n_test = math.ceil(test * n)
    return math.floor((1 - test) * n), n_test


def _check_split(n: int, k: int, val: float, test: float, where: str) -> None:
    """Each of the three stratified parts needs at least one sample of each of the ``k`` classes."""

    def fits(m: int) -> bool:
        rest, n_test = _split_sizes(m, test)
        n_train, n_val = _split_sizes(rest, val / (1 - test))
        return min(n_train, n_val, n_test) >= k

    if not fits(n):
        need = next(m for m in itertools.count(n + 1) if fits(m))
        raise DataError(
            f"{where}: {n} samples are too few for a stratified train/validation/test split "
            f"of {k} classes (each part needs one sample of every class); give at least {need}"
        )


def _standardise(x: np.ndarray, train_idx: np.ndarray, where: str) -> np.ndarray:
    """``x`` standardised with training statistics (per feature for vectors), in float64, then
    cast to float32; values whose standardisation overflows are a :class:`DataError`."""
    x64, ref = x.astype(np.float64), x[train_idx].astype(np.float64)
    axis = 0 if x.ndim == 2 else None  # per-feature statistics for vectors
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = ref.mean(axis), ref.std(axis)
        std = np.where(std > 0, std, 1.0)
        out = ((x64 - mean) / std).astype(np.float32)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(np.isfinite(out))):
        big = float(np.abs(x64).max())
        raise DataError(
            f"{where}: X cannot be standardised: values up to {big:.3g} in magnitude overflow "
            "(rescale X, or check for sentinel values)"
        )
    return out


def task_from_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    val: float = 0.2,
    test: float = 0.2,
    default_space: str | None = None,
    kind: str | None = None,
) -> Task:
    """Split arrays into a :class:`Task` (seed :data:`SPLIT_SEED`, features standardised).

    ``kind`` defaults to what ``y`` looks like: integer labels (N,) are classification
    (stratified split), other real targets (N,) or (N, k) regression (targets standardised
    with training statistics too: R² does not change), 0/1 matrices (N, k) multi-label.
    """
    from sklearn.model_selection import train_test_split

    x, y = np.asarray(x), np.asarray(y)
    detected = _kind(y, name)
    if kind is None:
        kind = detected
    elif kind not in _OUTPUT_NAMES:
        raise DataError(f"{name}: unknown task kind {kind!r}; use one of {', '.join(_OUTPUT_NAMES)}")
    elif kind != "regression" and detected != kind:
        raise DataError(f"{name}: y looks like {detected} targets, not {kind}")
    _check_x(x, len(y), name)
    if x.ndim == 3:  # (N, H, W) images get a channel dimension
        x = x[:, None]
    idx = np.arange(len(x))
    if kind == "classification":
        targets: np.ndarray = _class_labels(y, name)
        width = int(targets.max()) + 1
        _check_split(len(x), width, val, test, name)
        stratify: np.ndarray | None = targets
    else:
        _check_targets(y, kind, name)
        targets = y.astype(np.float32).reshape(len(y), -1)
        width = targets.shape[1]
        _check_split(len(x), 1, val, test, name)
        stratify = None
    rest, test_idx = train_test_split(
        idx, test_size=test, stratify=stratify, random_state=SPLIT_SEED
    )
    train_idx, val_idx = train_test_split(
        rest,
        test_size=val / (1 - test),
        stratify=None if stratify is None else stratify[rest],
        random_state=SPLIT_SEED,
    )
    x = _standardise(x, train_idx, name)
    if kind == "regression":
        targets = _standardise(targets, train_idx, f"{name} (y)")

    def part(i: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.ascontiguousarray(x[i], dtype=np.float32)), torch.from_numpy(
            np.ascontiguousarray(targets[i])
        )

    space = default_space or ("default_space.yaml" if x.ndim == 4 else "mlp_space.yaml")
    return Task(
        name, *part(train_idx), *part(val_idx), *part(test_idx), width, space, kind
    )


def load_npz_task(path: str | Path) -> Task:
    """A task from a ``.npz`` file holding arrays ``X`` (N, ...) and ``y``: labels (N,),
    regression targets (N,) or (N, k) (non-integer floats), or 0/1 multi-label targets (N, k)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):  # np.load would read a .npy or text file as something else
        raise DataError(
            f"{path}: not an .npz archive; save X and y with numpy.savez(path, X=..., y=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"{path}: missing array(s) {missing}; the file has {sorted(arrays) or 'no arrays'}"
        )
    return task_from_arrays(path.stem, arrays["X"], arrays["y"])


@register_task("digits")
def digits() -> Task:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes) as (1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return task_from_arrays("digits", d.images / 16.0, d.target, default_space="default_space.yaml")


@register_task("moons")
def moons() -> Task:
    """Two interleaving half circles (1,000 points with noise 0.2), 2 classes."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1000, noise=0.2, random_state=SPLIT_SEED)
    return task_from_arrays("moons", x, y, default_space="mlp_space.yaml")


@register_task("wine")
def wine() -> Task:
    """scikit-learn's bundled wine recognition data (178 samples, 13 features, 3 cultivars)."""
    from sklearn.datasets import load_wine

    d = load_wine()
    return task_from_arrays("wine", d.data, d.target, default_space="mlp_space.yaml")


@register_task("breast_cancer")
def breast_cancer() -> Task:
    """scikit-learn's bundled Wisconsin breast-cancer data (569 samples, 30 features, 2
    classes)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return task_from_arrays("breast_cancer", d.data, d.target, default_space="mlp_space.yaml")


@register_task("diabetes")
def diabetes() -> Task:
    """scikit-learn's bundled diabetes data: regression of disease progression (442 samples,
    10 features); scored by R² (targets standardised)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return task_from_arrays(
        "diabetes", d.data, d.target, default_space="mlp_space.yaml", kind="regression"
    )
