"""Graph search tasks: the sbm graph-classification task, the karate node-classification task
and ``design(task="sbm")`` end to end at a reduced trial count."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from netarchitect.errors import SpecError
from netarchitect.graph.batch import Graph, GraphBatch
from netarchitect.graph.datasets import sbm_graphs
from netarchitect.search import TrainConfig, get_task, list_tasks
from netarchitect.search.graph_task import (
    GraphClassificationTask,
    NodeClassificationTask,
    graph_call,
)
from netarchitect.search.tasks import DataError
from netarchitect.spec import load_spec


class PoolNet(nn.Module):
    """A hand-written graph classifier: one sum-aggregation layer, a sum readout, a head."""

    def __init__(self, features: int, classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.lin = nn.Linear(features, hidden)
        self.msg = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x, edge_index=None, batch=None, num_graphs=None):
        h = self.lin(x).relu()
        agg = torch.zeros_like(h).index_add_(0, edge_index[1], h[edge_index[0]])
        h = (h + self.msg(agg)).relu()
        pooled = torch.zeros(num_graphs, h.shape[1]).index_add_(0, batch, h)
        return self.head(self.drop(pooled / 10))


@pytest.fixture(scope="module")
def small_task() -> GraphClassificationTask:
    graphs = sbm_graphs(120, communities=(1, 4), num_nodes=(12, 16), seed=1)
    return GraphClassificationTask.from_graphs("sbm_small", graphs)


def _graph_spec(
    classes: int, *, readout: bool = True, context=("edge_index", "batch", "num_graphs")
):
    """A GNN spec built from plain blocks: linear layers and a graph readout."""
    nodes = [{"id": "fc", "block": "linear", "params": {"out_features": 8}}]
    if readout:
        nodes.append({"id": "pool", "block": "graph_pool", "params": {"reduce": "sum"},
             "context": [c for c in ("batch", "num_graphs") if c in context]})
    nodes.append({"id": "head", "block": "linear", "params": {"out_features": classes}})
    return {
        "name": "g",
        "inputs": {"x": {"shape": [2]}},
        "context": list(context),
        "nodes": nodes,
        "outputs": ["head"],
    }


# ---------------------------------------------------------------------- the data and its split


def test_sbm_is_registered_and_split_reproducibly():
    assert "sbm" in list_tasks()
    a, b = get_task("sbm"), get_task("sbm")
    assert isinstance(a, GraphClassificationTask) and a.default_space == "gnn_space.yaml"
    assert a.input_shape == (2,) and a.num_classes == 4
    sizes = (len(a.train_graphs), len(a.val_graphs), len(a.test_graphs))
    assert sizes == (len(b.train_graphs), len(b.val_graphs), len(b.test_graphs))
    assert sum(sizes) == 600
    for part in ("train", "val", "test"):  # the same graphs in the same order each time
        for g, h in zip(getattr(a, part + "_graphs"), getattr(b, part + "_graphs"), strict=True):
            assert torch.equal(g.edge_index, h.edge_index) and int(g.y) == int(h.y)
    for part in (a.train_graphs, a.val_graphs, a.test_graphs):  # stratified: all classes in each
        assert {int(g.y) for g in part} == {0, 1, 2, 3}
    text = a.describe()
    assert text.startswith("sbm: graph classification, 4 classes, 2 node features")
    assert "360 train / 120 val / 120 test graphs" in text


def test_labels_are_remapped_and_bad_graph_lists_refused():
    graphs = [Graph(x=torch.ones(3, 1), y=torch.tensor(5 + i % 2)) for i in range(20)]
    task = GraphClassificationTask.from_graphs("t", graphs)
    assert task.num_classes == 2 and {int(g.y) for g in task.train_graphs} == {0, 1}
    with pytest.raises(DataError, match="single class"):
        GraphClassificationTask.from_graphs("t", [Graph(x=torch.ones(2, 1), y=torch.tensor(0))] * 9)
    with pytest.raises(DataError, match=r"graphs\[1\] needs node features x and one label y"):
        GraphClassificationTask.from_graphs("t", [graphs[0], Graph(x=torch.ones(2, 1))])


def test_proxy_and_cost_inputs(small_task):
    assert small_task.proxy_inputs(8, torch.Generator()) is None
    inputs = small_task.cost_inputs()
    assert set(inputs) == {"x", "edge_index", "batch", "num_graphs"} and inputs["num_graphs"] == 1
    counts = sorted(int(g.num_nodes) for g in small_task.train_graphs)
    assert inputs["x"].shape == (counts[len(counts) // 2], 2)
    logits = PoolNet(2, 2)(**inputs)
    assert logits.shape == (1, 2)


# ---------------------------------------------------------------------- check_model


def test_check_model_accepts_a_graph_classifier(small_task):
    small_task.check_model(load_spec(_graph_spec(2)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_graph_spec(2, readout=False), "no node takes 'batch'"),
        (_graph_spec(3), r"classifier of 2 classes must output \[2\]"),
        (_graph_spec(2, context=("edge_index", "batch", "num_graphs", "pos")), r"not \['pos'\]"),
        (_graph_spec(2, context=("edge_index", "batch")), r"declare \['num_graphs'\] too"),
    ],
)
def test_check_model_refuses_what_cannot_serve_the_task(small_task, spec, message):
    with pytest.raises(SpecError, match=message) as err:
        small_task.check_model(load_spec(spec))
    assert err.value.path in ("context", "outputs")


# ---------------------------------------------------------------------- training


def test_graph_fit_learns_is_seeded_and_restores_the_best_epoch(small_task):
    cfg = TrainConfig(lr=1e-2, epochs=6, batch_size=16, augment=0.3, patience=10, seed=0)
    results, states = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = PoolNet(2, 2)
        results.append(small_task.fit(model, cfg))
        states.append(model.state_dict())
    a, b = results
    assert a.curve == b.curve and a.val_acc == b.val_acc
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])
    assert a.val_acc >= 0.9 and a.epochs_run == 6 and a.stopped == "completed"
    assert a.val_acc == max(a.curve)
    model = PoolNet(2, 2)
    model.load_state_dict(states[0])
    from netarchitect.search.graph_task import _evaluate

    val = [GraphBatch.from_graphs(small_task.val_graphs)]
    assert _evaluate(model, val) == (a.val_acc, a.val_loss)  # the best epoch's weights
    acc, loss = small_task.test(model)
    assert 0.0 <= acc <= 1.0 and loss > 0 and model.training  # test() restores the mode


def test_graph_fit_stops_when_pruned_or_not_improving(small_task):
    seen = []

    def stop_at_two(epoch: int, metric: float) -> bool:
        seen.append(epoch)
        return epoch == 1

    cfg = TrainConfig(epochs=8, batch_size=32, patience=1, seed=0)
    pruned = small_task.fit(PoolNet(2, 2), cfg, on_epoch=stop_at_two)
    assert pruned.stopped == "pruned" and pruned.epochs_run == 2 and seen == [0, 1]
    frozen = PoolNet(2, 2)
    frozen.requires_grad_(False)  # nothing learns: the first epoch stays the best
    frozen.head.bias.requires_grad_(True)
    with torch.no_grad():
        frozen.head.bias.fill_(0.0)
    result = small_task.fit(frozen, TrainConfig(lr=1e-9, epochs=8, batch_size=32, patience=2))
    assert result.stopped == "early" and result.epochs_run <= 4


def test_non_finite_validation_loss_counts_as_zero_accuracy(small_task):
    class Broken(PoolNet):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            return out if self.training else out * float("nan")

    result = small_task.fit(Broken(2, 2), TrainConfig(epochs=2, batch_size=64, patience=5))
    assert result.curve == [0.0, 0.0] and result.val_acc == 0.0


def test_graph_call_passes_only_the_declared_context():
    class Declares(nn.Module):
        context_names = ("edge_index",)

        def forward(self, x, **context):
            return context

    b = GraphBatch.from_graphs([Graph(x=torch.ones(2, 1), edge_index=torch.tensor([[0], [1]]))])
    assert list(graph_call(Declares(), b)) == ["edge_index"]
    assert graph_call(PoolNet(1, 2), b).shape == (1, 2)  # undeclared: gets everything


# ---------------------------------------------------------------------- node classification


@pytest.fixture(scope="module")
def karate() -> NodeClassificationTask:
    return get_task("karate")


def test_karate_task_masks(karate):
    masks = torch.stack([karate.train_mask, karate.val_mask, karate.test_mask])
    assert masks.sum(0).tolist() == [1] * 34  # a partition of the nodes
    assert int(karate.train_mask.sum()) == 4 and karate.num_classes == 4
    assert karate.input_shape == (34,) and karate.proxy_inputs(1, torch.Generator()) is None
    assert "karate: node classification, 4 classes" in karate.describe()
    assert set(karate.cost_inputs()) == {"x", "edge_index"} and karate.context == ("edge_index",)


def _gcn_node_spec(hidden: int = 16) -> dict:
    conv = {"block": "gcn_conv", "context": ["edge_index"]}
    return {
        "name": "gcn_karate",
        "inputs": {"x": {"shape": [34]}},
        "context": ["edge_index"],
        "roles": {"kind": "gnn", "level": "node"},
        "nodes": [
            {"id": "c1", **conv, "params": {"out_channels": hidden}},
            {"id": "act", "block": "relu"},
            {"id": "c2", **conv, "params": {"out_channels": 4}},
        ],
        "outputs": ["c2"],
    }


@pytest.mark.slow
def test_karate_trains_a_gcn_full_batch(karate):
    from netarchitect.network import build

    spec = load_spec(_gcn_node_spec())
    karate.check_model(spec)
    model = build(spec, seed=0)
    result = karate.fit(model, TrainConfig(lr=1e-2, epochs=100, patience=100, seed=0))
    assert result.epochs_run == 100 and result.val_acc >= 0.8
    acc, loss = karate.test(model)
    assert acc >= 0.7 and math.isfinite(loss)
    mlp = {
        "name": "mlp",
        "inputs": {"x": {"shape": [34]}},
        "nodes": [{"id": "fc", "block": "linear", "params": {"out_features": 4}}],
        "outputs": ["fc"],
    }
    with pytest.raises(SpecError, match=r"declare \['edge_index'\] too"):
        karate.check_model(load_spec(mlp))
    with pytest.raises(SpecError, match="no node takes 'edge_index'"):
        karate.check_model(load_spec({**mlp, "context": ["edge_index"]}))


@pytest.mark.parametrize(
    ("task", "space"), [("sbm", "gnn_space.yaml"), ("karate", "gnn_node_space.yaml")]
)
def test_packaged_spaces_fit_their_tasks(task, space):
    from netarchitect.search.config import packaged_space
    from netarchitect.search.expand import FirstTrial
    from netarchitect.search.space import SearchSpace

    t = get_task(task)
    assert t.default_space == space
    s = SearchSpace.from_spec(
        packaged_space(space), variables={"num_classes": t.num_classes}, inputs={"x": t.input_shape}
    )
    t.check_model(s.sample(FirstTrial()))
    paths = [d.path for d in s.dimensions]
    assert "nodes[0].times" in paths or "nodes[1].times" in paths  # the depth is searched


# ---------------------------------------------------------------------- design end to end


@pytest.fixture(scope="module")
def sbm_run(tmp_path_factory):
    from rich.console import Console

    from netarchitect.search import design

    console = Console(record=True, width=160)
    out = tmp_path_factory.mktemp("runs")
    result = design(task="sbm", trials=2, workers=1, out=out, console=console)
    return result, console.export_text()


@pytest.mark.slow
def test_design_sbm_end_to_end(sbm_run):
    """``design(task="sbm")`` with the packaged GNN space: the digits run's report, Pareto plot
    and chosen models, and each chosen model reproduces its test accuracy."""
    import json

    from netarchitect.network import build
    from netarchitect.weights import load_weights

    result, shown = sbm_run
    run = result.run_dir
    assert run.name == "sbm" and "sbm: graph classification, 4 classes" in shown
    assert {"report.md", "pareto.png", "history.png", "run.json", "study.db", "models"} <= {
        p.name for p in run.iterdir()
    }
    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run / "report.md").read_text()
    for section in ("# Search report: sbm", "## Chosen models (Pareto front)", "gcn_conv"):
        assert section in report
    assert json.loads((run / "run.json").read_text())["task"] == "sbm"
    task = get_task("sbm")
    assert result.final
    for f in result.final:
        folder = run / f["dir"]
        model = load_weights(build(load_spec(folder / "spec.yaml")), folder / "weights.safetensors")
        assert type(model).__name__ == "GNNNetwork" and f["params"] <= 50_000
        assert task.test(model)[0] == pytest.approx(f["test_acc"])
        assert f"{100 * f['test_acc']:.2f}%" in report


@pytest.mark.slow
def test_design_karate_end_to_end(tmp_path):
    """Node classification through ``design``: the packaged node space, chosen models written."""
    from rich.console import Console

    from netarchitect.search import design

    result = design(task="karate", trials=2, workers=0, out=tmp_path, console=Console(width=160))
    assert result.final and (result.run_dir / "report.md").is_file()
    for f in result.final:
        assert (result.run_dir / f["dir"] / "weights.safetensors").is_file()
        assert 0.0 <= f["test_acc"] <= 1.0
