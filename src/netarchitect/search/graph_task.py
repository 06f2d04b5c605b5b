"""Graph search tasks: classify whole graphs (``sbm``) or the nodes of one graph (``karate``).

:class:`GraphClassificationTask` holds three lists of :class:`~netarchitect.graph.batch.Graph`
(each with a per-graph label ``y``), split stratified with the fixed seed
:data:`~netarchitect.search.tasks.SPLIT_SEED`. A candidate is a spec whose input ``x`` is the
node features ``(N, F)`` and whose context is the graph (``edge_index``, ``batch``,
``num_graphs``, ...); it must pool the nodes of each graph into one row (a readout taking
``batch``). Training is :func:`~netarchitect.search.trainer.fit_loop`, the loop of every
task (AdamW, warm-up then cosine decay, per-epoch validation with patience, the best epoch's
weights restored) over seeded mini-batches of graphs; ``augment`` adds node-feature noise.

:class:`NodeClassificationTask` is one graph with train/validation/test node masks, trained
full-batch (one step per epoch); ``karate`` is Zachary's karate club (networkx), 4 classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from .tasks import SPLIT_SEED, DataError, register_task
from .trainer import TrainConfig, TrainResult, augment_batch, fit_loop

if TYPE_CHECKING:  # the graph package is imported when a graph task is built, not registered
    from ..graph.batch import Graph, GraphBatch
    from ..spec import NetworkSpec

__all__ = [
    "GraphClassificationTask",
    "NodeClassificationTask",
    "graph_call",
]

EVAL_BATCH = 256  # graphs per evaluation batch


# ---------------------------------------------------------------------- batches and calls


def graph_call(model: nn.Module, batch: GraphBatch) -> Tensor:
    """``model(batch.x, **context)`` with the context values the model declares (all of them
    for a module that does not say)."""
    context = batch.context()
    names = getattr(model, "context_names", None)
    if names is not None:
        context = {k: v for k, v in context.items() if k in names}
    return model(batch.x, **context)


def _noisy(batch: GraphBatch, strength: float, gen: torch.Generator) -> GraphBatch:
    """``batch`` with Gaussian noise of std ``0.2·strength`` on the node features."""
    if strength <= 0:
        return batch
    return dataclasses.replace(batch, x=augment_batch(batch.x, strength, gen))


def _scores(parts: Sequence[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """Accuracy and mean cross-entropy over ``(logits, labels)`` parts."""
    correct, loss, n = 0, 0.0, 0
    for logits, y in parts:
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return correct / n, loss / n


def _batches(graphs: Sequence[Graph], size: int, **kwargs: Any) -> Iterable[GraphBatch]:
    from ..graph.batch import iterate_batches

    return iterate_batches(graphs, size, **kwargs)


def _batch(graphs: Sequence[Graph]) -> GraphBatch:
    from ..graph.batch import GraphBatch

    return GraphBatch.from_graphs(graphs)


def _evaluate(model: nn.Module, batches: Sequence[GraphBatch]) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = _scores([(graph_call(model, b), b.y) for b in batches])
    model.train(was_training)
    return result


def _check_context(spec: NetworkSpec, passed: Sequence[str], consumed: str) -> None:
    """A :class:`SpecError` unless ``spec`` declares exactly the context ``passed`` (the task
    passes it to every call, also when costs are measured) and some node takes ``consumed``."""
    extra = [c for c in spec.context if c not in passed]
    missing = [c for c in passed if c not in spec.context]
    if extra or missing:
        what = f"not {extra}" if extra else f"declare {missing} too (a node may leave them unused)"
        raise SpecError(
            f"context: the task passes the graph as {list(passed)}; {what}", path="context"
        )
    if not any(consumed in node.context.values() for node in spec.nodes):
        raise SpecError(f"context: no node takes {consumed!r}; {_NEEDS[consumed]}", path="context")


_NEEDS = {
    "edge_index": "a graph network passes messages along edge_index",
    "batch": "a graph classifier pools the nodes of each graph with a readout taking batch",
}


def _call_inputs(batch: GraphBatch, names: Sequence[str]) -> dict[str, Any]:
    """``x`` and the context ``names`` of ``batch``: the keyword inputs of a candidate's call."""
    context = batch.context()
    return {"x": batch.x, **{k: context[k] for k in names}}


def _stratified_split(labels: np.ndarray, val: float, test: float) -> tuple[np.ndarray, ...]:
    """(train, val, test) indices, stratified by ``labels``, seed :data:`SPLIT_SEED`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    rest, test_idx = train_test_split(idx, test_size=test, stratify=labels, random_state=SPLIT_SEED)
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1 - test), stratify=labels[rest], random_state=SPLIT_SEED
    )
    return train_idx, val_idx, test_idx


# ---------------------------------------------------------------------- graph classification


@dataclass(frozen=True, eq=False)
class GraphClassificationTask:
    """Graphs with one class label each, split three ways; see the module doc."""

    name: str
    train_graphs: tuple[Graph, ...]
    val_graphs: tuple[Graph, ...]
    test_graphs: tuple[Graph, ...]
    num_classes: int
    default_space: str = "gnn_space.yaml"

    @classmethod
    def from_graphs(
        cls, name: str, graphs: Sequence[Graph], *, val: float = 0.2, test: float = 0.2,
        default_space: str = "gnn_space.yaml",
    ) -> GraphClassificationTask:
        """Split ``graphs`` (each with node features ``x`` and a 0-d integer ``y``)."""
        for i, g in enumerate(graphs):
            if g.x is None or g.y is None or g.y.numel() != 1:
                raise DataError(f"{name}: graphs[{i}] needs node features x and one label y")
        labels = np.array([int(g.y) for g in graphs])  # type: ignore[arg-type]
        classes, remapped = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"{name}: the graphs have a single class; classification needs two")
        graphs = [
            dataclasses.replace(g, y=torch.tensor(int(c))) for g, c in zip(graphs, remapped)
        ]
        parts = _stratified_split(remapped, val, test)
        return cls(
            name, *(tuple(graphs[i] for i in part) for part in parts), len(classes), default_space
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-node feature shape ``(F,)``."""
        return tuple(self.train_graphs[0].x.shape[1:])  # type: ignore[union-attr]

    def describe(self) -> str:
        nodes = [int(g.num_nodes) for g in self.train_graphs]  # type: ignore[arg-type]
        return (
            f"{self.name}: graph classification, {self.num_classes} classes, "
            f"{self.input_shape[0]} node features, {min(nodes)}–{max(nodes)} nodes per graph, "
            f"{len(self.train_graphs)} train / {len(self.val_graphs)} val / "
            f"{len(self.test_graphs)} test graphs"
        )

    def check_model(self, spec: NetworkSpec) -> None:
        """One output of ``num_classes`` per graph: a readout over ``batch``, only the graph
        context this task has."""
        from .constraints import check_classifier

        _check_context(spec, self.context, "batch")
        check_classifier(spec, self.num_classes)

    @property
    def context(self) -> tuple[str, ...]:
        """The context passed to every call: ``edge_index``, ``batch``, ``num_graphs`` (and
        ``edge_attr``/``edge_weight``/``pos`` if the graphs have them)."""
        return tuple(_batch(self.train_graphs[:1]).context())

    def _eval_batches(self, graphs: Sequence[Graph]) -> list[GraphBatch]:
        return list(_batches(graphs, EVAL_BATCH))

    def fit(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        on_epoch: Callable[[int, float], bool] | None = None,
    ) -> TrainResult:
        """Mini-batches of ``cfg.batch_size`` graphs, validation accuracy every epoch."""
        val = self._eval_batches(self.val_graphs)

        def batches(gen: torch.Generator) -> Iterable[tuple[GraphBatch, Tensor]]:
            for b in _batches(self.train_graphs, cfg.batch_size, shuffle=True, generator=gen):
                yield _noisy(b, cfg.augment, gen), b.y

        return fit_loop(
            model,
            cfg,
            steps_per_epoch=math.ceil(len(self.train_graphs) / cfg.batch_size),
            batches=batches,
            forward=graph_call,
            validate=lambda m: _evaluate(m, val),
            on_epoch=on_epoch,
        )

    def test(self, model: nn.Module) -> tuple[float, float]:
        """Accuracy and mean cross-entropy on the test graphs."""
        return _evaluate(model, self._eval_batches(self.test_graphs))

    def proxy_inputs(self, n: int, generator: torch.Generator) -> None:
        """Zero-cost proxies need plain input batches: not for graphs (``None``)."""

    def cost_inputs(self) -> dict[str, Any]:
        """One training graph of median size (costs are per graph, as digits' are per image)."""
        by_size = sorted(self.train_graphs, key=lambda g: g.num_nodes or 0)
        return _call_inputs(_batch([by_size[len(by_size) // 2]]), self.context)


# ---------------------------------------------------------------------- node classification


@dataclass(frozen=True, eq=False)
class NodeClassificationTask:
    """One graph whose nodes are classified; boolean masks pick the train/val/test nodes."""

    name: str
    graph: Graph
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    num_classes: int
    default_space: str = "gnn_node_space.yaml"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.x.shape[1:])  # type: ignore[union-attr]

    def describe(self) -> str:
        counts = [int(m.sum()) for m in (self.train_mask, self.val_mask, self.test_mask)]
        return (
            f"{self.name}: node classification, {self.num_classes} classes, "
            f"{self.input_shape[0]} node features, {self.graph.num_nodes} nodes / "
            f"{self.graph.num_edges} edges, {counts[0]} train / {counts[1]} val / "
            f"{counts[2]} test nodes"
        )

    def _whole(self) -> GraphBatch:
        return _batch([self.graph])

    @property
    def context(self) -> tuple[str, ...]:
        """The context passed to every call: the graph (``edge_index``, and ``edge_attr``/
        ``edge_weight``/``pos`` if it has them); one graph needs no ``batch``."""
        return tuple(k for k in self._whole().context() if k not in ("batch", "num_graphs"))

    def check_model(self, spec: NetworkSpec) -> None:
        """One output of ``num_classes`` per node, only the graph context this task has."""
        from .constraints import check_classifier

        _check_context(spec, self.context, "edge_index")
        check_classifier(spec, self.num_classes)

    def _scores(self, model: nn.Module, mask: Tensor) -> tuple[float, float]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = graph_call(model, self._whole())
        model.train(was_training)
        return _scores([(logits[mask], self.graph.y[mask])])  # type: ignore[index]

    def fit(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        on_epoch: Callable[[int, float], bool] | None = None,
    ) -> TrainResult:
        """Full-batch training: one step per epoch on the training nodes."""
        batch, mask = self._whole(), self.train_mask

        def forward(m: nn.Module, b: GraphBatch) -> Tensor:
            return graph_call(m, b)[mask]

        def batches(gen: torch.Generator) -> Iterable[tuple[GraphBatch, Tensor]]:
            yield _noisy(batch, cfg.augment, gen), batch.y[mask]  # type: ignore[index]

        return fit_loop(
            model,
            cfg,
            steps_per_epoch=1,
            batches=batches,
            forward=forward,
            validate=lambda m: self._scores(m, self.val_mask),
            on_epoch=on_epoch,
        )

    def test(self, model: nn.Module) -> tuple[float, float]:
        return self._scores(model, self.test_mask)

    def proxy_inputs(self, n: int, generator: torch.Generator) -> None:
        """Zero-cost proxies need plain input batches: not for graphs (``None``)."""

    def cost_inputs(self) -> dict[str, Any]:
        """The whole graph (costs of one full forward pass)."""
        return _call_inputs(self._whole(), self.context)


# ---------------------------------------------------------------------- registered tasks

#: The ``sbm`` task's data (:func:`~netarchitect.graph.datasets.sbm_graphs`): 600 graphs of
#: 24–40 nodes with 1, 2, 3 or 4 communities (the class), node features ``[1, log(1 + degree)]``.
SBM_SETTINGS: Mapping[str, Any] = {"num_graphs": 600, "seed": 0}


@register_task("sbm")
def sbm() -> GraphClassificationTask:
    """Stochastic-block-model graphs; the class is the number of communities."""
    from ..graph.datasets import sbm_graphs

    return GraphClassificationTask.from_graphs("sbm", sbm_graphs(**SBM_SETTINGS))


@register_task("karate")
def karate() -> NodeClassificationTask:
    """Zachary's karate club: 4 communities learnt from one labelled node each; the other 30
    nodes are split stratified into validation and test halves (seed :data:`SPLIT_SEED`)."""
    from sklearn.model_selection import train_test_split

    from ..graph.datasets import karate_club

    club = karate_club()
    y = club.graph.y
    rest = (~club.train_mask).nonzero().squeeze(1).numpy()
    labels = y[rest].numpy()  # type: ignore[index]
    val_idx, test_idx = train_test_split(
        rest, test_size=0.5, stratify=labels, random_state=SPLIT_SEED
    )

    def mask(idx: np.ndarray) -> Tensor:
        out = torch.zeros(len(y), dtype=torch.bool)  # type: ignore[arg-type]
        out[torch.from_numpy(idx)] = True
        return out

    return NodeClassificationTask(
        "karate", club.graph, club.train_mask, mask(val_idx), mask(test_idx), club.num_classes
    )
