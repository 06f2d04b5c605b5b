"""Graph layers vs PyTorch Geometric 2.8: training-step time, GAT memory, EGNN equivariance.

A random graph of 20,000 nodes, 200,000 edges (uniform endpoints, so with self-loops and
multi-edges) and 64 float32 features, 2 threads (``python -m benchmarks.bench_graph``);
results go to ``benchmarks/results/graph.json``. Each model is two layers (ReLU between,
64 → 64 → 64 features) with the weights copied into the PyG model and the outputs checked
equal before timing; a step is forward, ``out.square().mean()``, backward. Cases and target
ratios (ours / PyG, medians, alternating in one process):

* ``gcn_2layer_fwd_bwd`` ≤ 0.25; ``gin_2layer_fwd_bwd`` ≤ 0.5 (MLP 64-64-64, ε learnable);
  ``gat_2layer_fwd_bwd`` ≤ 0.7 (8 heads × 8 channels, concatenated);
* ``*_compiled``: ours under ``torch.compile(fullgraph=True)`` vs PyG compiled the same way
  (or, where PyG does not compile with ``fullgraph``, its default ``torch.compile``; what
  was used is in ``extra.peer_mode``) — reported, no target;
* ``gat_2layer_fwd_bwd`` also records the peak memory of one GAT step (``extra.memory``,
  target ≤ 1.0× PyG's). Method: each side runs in a fresh process with glibc's
  ``MALLOC_MMAP_THRESHOLD_=65536`` (every tensor over 64 KiB is its own mapping and goes back
  to the OS when freed); after a warm-up step, ``/proc/self/clear_refs`` resets the peak
  RSS, one step runs, and the peak is ``VmHWM`` minus the RSS before the step: every byte
  the step touches (outputs, saved activations, gradients, kernel workspaces), whichever
  code path the layers take. Median of 3 processes per side;
* ``egnn_layer_fwd``: one EGNN layer's forward on 1,000 nodes / 10,000 edges in 3-D, timed
  alone; ``extra`` holds the equivariance errors (max abs, float32) of the coordinates under
  a random rotation, a reflection and a translation, and of the features' invariance
  (target ≤ 1e-5), and whether 8 stacked layers stay finite with all coordinates equal.

``--quick``: 2,000 nodes / 20,000 edges, one repeat, no compiled cases, memory in one
process each, results in a temporary directory unless ``--results-dir`` is given (a smoke
run: its figures are not results). ``--only gat,egnn`` runs some cases (results merge by
case); ``--no-compile`` skips the compiled ones.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_one, time_parser

NAME = "graph"
NODES, EDGES, FEATURES, HEADS = 20_000, 200_000, 64, 8
QUICK_NODES, QUICK_EDGES = 2_000, 20_000
TARGETS = {"gcn": 0.25, "gin": 0.5, "gat": 0.7}
MEMORY_TARGET = 1.0
KINDS = tuple(TARGETS)


def random_graph(
    nodes: int = NODES, edges: int = EDGES, features: int = FEATURES, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Node features ``(N, F)`` ~ N(0, 1) and uniform random ``edge_index`` ``(2, E)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, features, generator=g)
    return x, torch.randint(0, nodes, (2, edges), generator=g)


class TwoLayer(nn.Module):
    """``conv2(relu(conv1(x, edge_index)), edge_index)``."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def _mlp(f: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(f, f), nn.ReLU(), nn.Linear(f, f))


def ours(kind: str, f: int = FEATURES) -> TwoLayer:
    """Our two-layer model of ``kind`` (``gcn``, ``gin``, ``gat``)."""
    from netarchitect.layers.graph import conv  # noqa: F401  (registers the blocks)
    from netarchitect.registry import get_block

    def layer() -> nn.Module:
        if kind == "gcn":
            return get_block("gcn_conv")(f, f)
        if kind == "gin":
            return get_block("gin_conv")(f, f, mlp_module=_mlp(f), train_eps=True)
        return get_block("gat_conv")(f, f // HEADS, num_heads=HEADS)

    torch.manual_seed(0)
    return TwoLayer(layer(), layer())


def pyg(kind: str, f: int = FEATURES) -> TwoLayer:
    """The PyG model of ``kind`` with the same shapes."""
    from torch_geometric import nn as gnn

    def layer() -> nn.Module:
        if kind == "gcn":
            return gnn.GCNConv(f, f)
        if kind == "gin":
            return gnn.GINConv(_mlp(f), train_eps=True)
        return gnn.GATConv(f, f // HEADS, heads=HEADS)

    return TwoLayer(layer(), layer())


def copy_weights(kind: str, src: TwoLayer, dst: TwoLayer) -> None:
    """Copy ``src``'s (our) weights into the PyG model ``dst`` (names mapped where they
    differ, values reshaped to PyG's layout)."""
    names = PYG_NAMES.get(kind, {})
    theirs = dst.state_dict()
    state = {}
    for name, value in src.state_dict().items():
        prefix, _, leaf = name.partition(".")
        target = f"{prefix}.{names.get(leaf, leaf)}"
        state[target] = value.reshape(theirs[target].shape)
    dst.load_state_dict(state)


#: Our parameter names -> PyG's where they differ, per layer kind.
PYG_NAMES: dict[str, dict[str, str]] = {}


def build_pair(kind: str, f: int = FEATURES) -> tuple[TwoLayer, TwoLayer]:
    a, b = ours(kind, f), pyg(kind, f)
    copy_weights(kind, a, b)
    return a, b


def train_step(model: nn.Module, x: Tensor, edge_index: Tensor) -> Callable[[], None]:
    """One forward + backward with fresh gradients."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x, edge_index).square().mean().backward()

    return step


def check_parity(a: nn.Module, b: nn.Module, x: Tensor, edge_index: Tensor) -> float:
    """Max abs difference of the two models' outputs (asserted below 1e-4)."""
    with torch.no_grad():
        diff = float((a(x, edge_index) - b(x, edge_index)).abs().max())
    if not diff < 1e-4:
        raise AssertionError(f"outputs differ by {diff:.3g}: the comparison would be unfair")
    return diff


def compiled(model: nn.Module, x: Tensor, edge_index: Tensor) -> tuple[nn.Module, str]:
    """``torch.compile(model, fullgraph=True)``, else the default compile, compiled on the
    benchmark's inputs; the mode used."""
    for mode, kwargs in (("fullgraph", {"fullgraph": True}), ("default", {})):
        candidate = torch.compile(model, **kwargs)
        try:
            train_step(candidate, x, edge_index)()
        except Exception as exc:  # noqa: BLE001 - a peer that does not compile is reported
            torch._dynamo.reset()
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        model.zero_grad(set_to_none=True)
        return candidate, mode
    return model, f"eager ({reason})"


# ---------------------------------------------------------------------- memory


def _rss(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def step_peak_bytes(side: str, kind: str, nodes: int, edges: int) -> int:
    """Peak RSS growth (bytes) of one training step of ``side`` (``ours``/``pyg``) after a
    warm-up step; meant to run in a fresh process (see the module doc)."""
    torch.set_num_threads(2)
    x, edge_index = random_graph(nodes, edges)
    a, b = build_pair(kind)
    model = a if side == "ours" else b
    del a, b
    step = train_step(model, x, edge_index)
    step()
    model.zero_grad(set_to_none=True)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _rss("VmRSS")
    step()
    return _rss("VmHWM") - base


def peak_memory(kind: str, nodes: int, edges: int, runs: int) -> dict[str, Any]:
    """Median peak of ``runs`` fresh processes per side, alternating."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    code = (
        "import sys, benchmarks.bench_graph as b; "
        "print(b.step_peak_bytes(*sys.argv[1:3], *map(int, sys.argv[3:])))"
    )
    sides = ("ours", "pyg")
    peaks: dict[str, list[int]] = {side: [] for side in sides}
    root = Path(__file__).resolve().parents[1]
    for _ in range(runs):
        for side in ("ours", "pyg"):
            out = subprocess.run(
                [sys.executable, "-c", code, side, kind, str(nodes), str(edges)],
                check=True, capture_output=True, text=True, env=env, cwd=root,
            )
            peaks[side].append(int(out.stdout.split()[-1]))
    med = {side: statistics.median(v) for side, v in peaks.items()}
    return {
        "method": "peak RSS growth of one step in a fresh process (VmHWM after clear_refs), "
        "MALLOC_MMAP_THRESHOLD_=65536",
        "ours_bytes": med["ours"],
        "pyg_bytes": med["pyg"],
        "ratio": med["ours"] / med["pyg"],
        "target": MEMORY_TARGET,
        "runs": peaks,
    }


# ---------------------------------------------------------------------- EGNN


def _rotation(dim: int, g: torch.Generator, reflect: bool) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def egnn_case(nodes: int, edges: int) -> tuple[Callable[[], Any], dict[str, Any]]:
    """A forward of one EGNN layer, and its equivariance errors (float32)."""
    from netarchitect.layers.graph import egnn  # noqa: F401  (registers the block)
    from netarchitect.registry import get_block

    g = torch.Generator().manual_seed(0)
    x, edge_index = random_graph(nodes, edges, 16)
    pos = torch.randn(nodes, 3, generator=g)
    torch.manual_seed(0)
    layer = get_block("egnn_layer")(16, 16).eval()

    def run(p: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return layer(x, edge_index, pos=p)

    h, p = run(pos)
    errors = {}
    for name, reflect in (("rotation", False), ("reflection", True)):
        q = _rotation(3, g, reflect).float()
        shift = torch.randn(3, generator=g)
        h2, p2 = run(pos @ q.T + shift)
        errors[f"pos_{name}_translation"] = float((p2 - (p @ q.T + shift)).abs().max())
        errors[f"features_{name}_translation"] = float((h2 - h).abs().max())
    errors["max"] = max(errors.values())
    errors["target"] = 1e-5
    extra = {"equivariance_error": errors, "nodes": nodes, "edges": edges,
             "stacked_8_coincident_finite": _stack_is_finite(x, edge_index)}
    return lambda: run(pos), extra


def _stack_is_finite(x: Tensor, edge_index: Tensor, depth: int = 8) -> bool:
    """Whether 8 stacked EGNN layers stay finite (forward and gradients) when every node sits
    at the same point (the reference implementation's NaN case)."""
    from netarchitect.registry import get_block

    torch.manual_seed(0)
    layers = [get_block("egnn_layer")(x.shape[1], x.shape[1]) for _ in range(depth)]
    h, p = x, torch.zeros(x.shape[0], 3, requires_grad=True)
    for layer in layers:
        h, p = layer(h, edge_index, pos=p)
    (h.sum() + p.sum()).backward()
    grads = [q.grad for layer in layers for q in layer.parameters() if q.grad is not None]
    return bool(all(t.isfinite().all() for t in (h, p, *grads)))


# ---------------------------------------------------------------------- run


def run(
    *,
    warmup: int,
    repeats: int,
    threads: int,
    results_dir: str = RESULTS_DIR,
    quick: bool = False,
    compile: bool = True,
    memory_runs: int = 3,
    only: tuple[str, ...] = (*KINDS, "egnn"),
) -> dict[str, Any]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # compiled code guards on the thread count
    try:
        return _run(warmup, repeats, threads, results_dir, quick, compile, memory_runs, only)
    finally:
        torch.set_num_threads(previous)


def _run(
    warmup: int,
    repeats: int,
    threads: int,
    results_dir: str,
    quick: bool,
    compile: bool,
    memory_runs: int,
    only: tuple[str, ...],
) -> dict[str, Any]:
    nodes, edges = (QUICK_NODES, QUICK_EDGES) if quick else (NODES, EDGES)
    x, edge_index = random_graph(nodes, edges)
    graph = {"nodes": nodes, "edges": edges, "features": FEATURES}
    results: dict[str, Any] = {}
    timing = {"warmup": warmup, "repeats": repeats, "threads": threads, "results_dir": results_dir}
    for kind in (k for k in KINDS if k in only):
        a, b = build_pair(kind)
        diff = check_parity(a, b, x, edge_index)
        extra: dict[str, Any] = {**graph, "layers": 2, "max_abs_output_diff": diff}
        if kind == "gat":
            extra["memory"] = peak_memory(kind, nodes, edges, 1 if quick else memory_runs)
        case = f"{kind}_2layer_fwd_bwd"
        results[case] = compare(
            NAME, train_step(a, x, edge_index), train_step(b, x, edge_index), case=case,
            target=TARGETS[kind], label_ours=f"netarchitect {kind}", label_peer=f"PyG {kind}",
            extra=extra, **timing,
        )
        if compile:
            torch._dynamo.reset()  # the two models share TwoLayer.forward: fresh cache limits
            ca, _ = compiled(a, x, edge_index)
            cb, mode = compiled(b, x, edge_index)
            results[case + "_compiled"] = compare(
                NAME, train_step(ca, x, edge_index), train_step(cb, x, edge_index),
                case=case + "_compiled", label_ours=f"netarchitect {kind} (fullgraph)",
                label_peer=f"PyG {kind} ({mode})", extra={**graph, "peer_mode": mode}, **timing,
            )
    if "egnn" in only:
        fn, extra = egnn_case(1_000 if not quick else 200, 10_000 if not quick else 2_000)
        results["egnn_layer_fwd"] = time_one(NAME, fn, case="egnn_layer_fwd", extra=extra, **timing)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = time_parser(__doc__, warmup=2, repeats=10)
    parser.add_argument("--quick", action="store_true", help="a smoke run on a small graph")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled cases")
    parser.add_argument("--only", default="gcn,gin,gat,egnn", help="comma-separated cases")
    args = parse_args(parser, argv)
    results_dir = args.results_dir
    if args.quick and results_dir == RESULTS_DIR:  # smoke runs are not results
        results_dir = tempfile.mkdtemp(prefix="bench_graph_")
    return run(
        warmup=0 if args.quick else args.warmup,
        repeats=1 if args.quick else args.repeats,
        threads=args.threads,
        results_dir=results_dir,
        quick=args.quick,
        compile=not (args.quick or args.no_compile),
        only=tuple(args.only.split(",")),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
