"""MAML meta-training step: ``torch.func.vmap`` over the tasks vs a Python loop over tasks.

Forward + backward of the second-order MAML meta-loss plus an Adam step, float32, 2 threads
(``python -m benchmarks.bench_meta``); results go to ``benchmarks/results/ode_meta.json``.
A meta-batch of 8 tasks, 5-way 1-shot with 15 queries per class, 1×16×16 glyph images, one
inner step. Ours is ``MAML.meta_loss`` (vmap); the peer is the learn2learn-style loop (per
task: ``torch.autograd.grad(create_graph=True)`` on the support loss, then the query loss at
the adapted weights). Cases and target ratios (ours / peer):

* ``maml_vmap_vs_loop``: an MLP 256-64-64-5, the regime where the per-task Python and
  autograd overhead dominates — ≤ 0.6;
* ``maml_vmap_vs_loop_conv``: a 4-block conv net (16 channels); compute-bound on 2 CPU
  threads, so vmap saves less — reported, no target.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect.meta.episodes import EpisodeSampler
from netarchitect.meta.glyphs import make_glyphs
from netarchitect.meta.maml import MAML

NAME = "ode_meta"
TASKS, WAYS, SHOTS, QUERIES, CHANNELS, INNER_LR = 8, 5, 1, 15, 16, 0.4


def mlp(n_way: int = WAYS) -> nn.Module:
    """A 256-64-64-n_way ReLU MLP on flattened 16×16 images."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, n_way),
    )


def conv_net(channels: int = CHANNELS, n_way: int = WAYS) -> nn.Module:
    """Four conv-ReLU-pool blocks (16×16 -> 1×1) and a linear head."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, n_way))


def loop_meta_loss(model: nn.Module, batch: tuple[Tensor, ...], inner_lr: float) -> Tensor:
    """The learn2learn-style reference: one task at a time with ``autograd.grad``."""
    params = dict(model.named_parameters())
    losses = []
    for sx, sy, qx, qy in zip(*batch):
        support = F.cross_entropy(model(sx), sy)
        grads = torch.autograd.grad(support, list(params.values()), create_graph=True)
        fast = {n: p - inner_lr * g for (n, p), g in zip(params.items(), grads)}
        losses.append(F.cross_entropy(functional_call(model, fast, (qx,)), qy))
    return torch.stack(losses).mean()


def meta_step(params: list[nn.Parameter], loss: Callable[[], Tensor]) -> Callable[[], None]:
    """One meta-training step: meta-loss, backward, Adam update."""
    opt = torch.optim.Adam(params, lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return step


def run(
    *, warmup: int, repeats: int, threads: int, results_dir: str = RESULTS_DIR
) -> dict[str, Any]:
    torch.manual_seed(0)
    x, y = make_glyphs(64, 20, size=16, seed=0)
    sampler = EpisodeSampler(x, y, n_way=WAYS, k_shot=SHOTS, n_query=QUERIES, seed=0)
    batch = sampler.sample_batch(TASKS)
    results = {}
    for case, make, target in (
        ("maml_vmap_vs_loop", mlp, 0.6),
        ("maml_vmap_vs_loop_conv", conv_net, None),
    ):
        results[case] = _case(case, make, batch, target, warmup, repeats, threads, results_dir)
    return results


def _case(
    case: str,
    make: Callable[[], nn.Module],
    batch: tuple[Tensor, ...],
    target: float | None,
    warmup: int,
    repeats: int,
    threads: int,
    results_dir: str,
) -> dict[str, Any]:
    ours_model, peer_model = make(), make()
    peer_model.load_state_dict(ours_model.state_dict())
    maml = MAML(ours_model, inner_lr=INNER_LR)
    torch.testing.assert_close(  # same meta-loss before timing
        maml.meta_loss(*batch), loop_meta_loss(peer_model, batch, INNER_LR), rtol=1e-4, atol=1e-5
    )
    return compare(
        NAME,
        meta_step(list(maml.parameters()), lambda: maml.meta_loss(*batch)),
        meta_step(
            list(peer_model.parameters()), lambda: loop_meta_loss(peer_model, batch, INNER_LR)
        ),
        case=case,
        target=target,
        label_ours="MAML.meta_loss (vmap)",
        label_peer="loop over tasks (autograd.grad)",
        extra={
            "model": "conv4-16" if case.endswith("conv") else "mlp-256-64-64-5",
            "tasks": TASKS,
            "n_way": WAYS,
            "k_shot": SHOTS,
            "n_query": QUERIES,
            "image": "1x16x16",
            "inner_steps": 1,
            "order": "second",
        },
        warmup=warmup,
        repeats=repeats,
        threads=threads,
        results_dir=results_dir,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(time_parser(__doc__, warmup=3, repeats=20), argv)
    return run(
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
