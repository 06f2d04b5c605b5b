"""Ensembles and soups: a vectorised ensemble vs a Python loop over members, and a greedy soup.

``python -m benchmarks.bench_extend``; results go to ``benchmarks/results/extend.json``.
Cases (ours / peer, float32, 2 threads):

* ``vectorized_ensemble_16_mlp``: forward + backward of 16 MLPs 64-128-128-10 on a shared
  batch of 64, ``VectorizedEnsemble`` (``impl="auto"``, the hand-batched ``baddbmm`` path)
  vs a Python loop over the members — target ≤ 0.5;
* ``vectorized_ensemble_16_mlp_vmap``: the same with ``impl="vmap"``
  (``stack_module_state`` + ``vmap``) — reported, no target: the measurement behind the
  ``auto`` choice;
* ``greedy_soup_digits``: an MLP with BatchNorm pre-trained on digits, five fine-tunes
  (different learning rates, seeds, augmentation and label smoothing; fixed epochs, so the
  validation split stays held out), a greedy soup on the validation split; ``extra``
  records test-split accuracy of the soup, of the best single ingredient (chosen by
  validation accuracy, as in Wortsman et al., and the oracle best on test) and of the
  uniform soup. The timing is the soup's construction.
"""

from __future__ import annotations

import copy
import itertools
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_one, time_parser
from netarchitect.extend.ensemble import VectorizedEnsemble
from netarchitect.extend.soup import greedy_soup, uniform_soup
from netarchitect.search.tasks import get_task
from netarchitect.search.trainer import augment_batch, evaluate

NAME = "extend"
MEMBERS, BATCH, WIDTHS = 16, 64, (64, 128, 128, 10)
PRETRAIN_EPOCHS, FINETUNE_EPOCHS = 10, 5
#: (lr, seed, augmentation strength, label smoothing) of each fine-tune.
FINETUNES = [(1e-3, 1, 0.5, 0.0), (3e-3, 2, 0.5, 0.1), (1e-3, 3, 1.0, 0.1), (3e-4, 4, 0.3, 0.0),
             (2e-3, 5, 0.8, 0.05)]


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(WIDTHS)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(WIDTHS) - 2 else [])
    return nn.Sequential(*layers)


def _ensemble_case(case: str, impl: str, target: float | None, **timing: Any) -> dict[str, Any]:
    members = [mlp(s) for s in range(MEMBERS)]
    ens = VectorizedEnsemble(members, impl=impl)
    x = torch.randn(BATCH, WIDTHS[0])
    y = torch.randint(0, WIDTHS[-1], (MEMBERS, BATCH))
    loop_out = torch.stack([m(x) for m in members])
    torch.testing.assert_close(ens(x), loop_out, rtol=1e-4, atol=1e-5)  # same outputs first

    def ours() -> None:
        ens.zero_grad(set_to_none=True)
        F.cross_entropy(ens(x).flatten(0, 1), y.flatten()).backward()

    def peer() -> None:
        for m in members:
            m.zero_grad(set_to_none=True)
        out = torch.stack([m(x) for m in members])
        F.cross_entropy(out.flatten(0, 1), y.flatten()).backward()

    return compare(
        NAME, ours, peer, case=case, target=target,
        label_ours=f"VectorizedEnsemble (impl={ens.impl})", label_peer="loop over members",
        extra={"members": MEMBERS, "batch": BATCH, "mlp": "-".join(map(str, WIDTHS)),
               "pass": "forward+backward"},
        **timing,
    )


def soup_net() -> nn.Module:
    """A 64-256-256-10 MLP with BatchNorm (whose statistics the soup averages)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10),
    )


def fit(model: nn.Module, task: Any, epochs: int, lr: float, seed: int, augment: float,
        smoothing: float) -> nn.Module:
    """AdamW with cosine decay for a fixed number of epochs: no epoch is picked on the
    validation split, which the greedy soup then uses as its held-out data."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, batch = len(task.x_train), 64
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-n // batch))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            xb = augment_batch(task.x_train[idx], augment, gen)
            loss = F.cross_entropy(model(xb), task.y_train[idx], label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _soup_case(threads: int, results_dir: str) -> dict[str, Any]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    task = get_task("digits")
    torch.manual_seed(0)
    base = fit(soup_net(), task, PRETRAIN_EPOCHS, 3e-3, 0, 0.0, 0.0)
    models = [fit(copy.deepcopy(base), task, FINETUNE_EPOCHS, *cfg) for cfg in FINETUNES]
    torch.set_num_threads(previous)

    def test_acc(model: nn.Module) -> float:
        return float(evaluate(model, task.x_test, task.y_test)[0])

    result = greedy_soup(models, task.x_val, task.y_val)
    val = result.ingredient_scores
    test = [test_acc(m) for m in models]
    best_by_val = max(range(len(models)), key=lambda i: val[i])
    extra = {
        "model": "mlp-64-256-256-10 (BatchNorm, dropout 0.1)",
        "pretrain_epochs": PRETRAIN_EPOCHS,
        "finetune_epochs": FINETUNE_EPOCHS,
        "finetunes_lr_seed_augment_smoothing": FINETUNES,
        "test_acc_pretrained": test_acc(base),
        "chosen": result.ingredients,
        "val_acc_soup": result.score,
        "val_acc_ingredients": val,
        "test_acc_soup": test_acc(result.model),
        "test_acc_ingredients": test,
        "test_acc_best_ingredient_by_val": test[best_by_val],
        "test_acc_val_tied_best_ingredients": [t for t, v in zip(test, val) if v == max(val)],
        "test_acc_best_ingredient_oracle": max(test),
        "test_acc_uniform_soup": test_acc(uniform_soup(models)),
        "test_acc_uniform_soup_recomputed_bn": test_acc(
            uniform_soup(models, recompute_bn=task.x_train)),
    }
    print({k: v for k, v in extra.items() if k.startswith("test") or k == "chosen"})
    return time_one(
        NAME, lambda: greedy_soup(models, task.x_val, task.y_val), case="greedy_soup_digits",
        warmup=0, repeats=3, threads=threads, results_dir=results_dir, extra=extra,
        label="greedy_soup (5 ingredients)",
    )


def run(
    *, warmup: int, repeats: int, threads: int, results_dir: str = RESULTS_DIR
) -> dict[str, Any]:
    timing = {"warmup": warmup, "repeats": repeats, "threads": threads,
              "results_dir": results_dir}
    return {
        "vectorized_ensemble_16_mlp": _ensemble_case(
            "vectorized_ensemble_16_mlp", "auto", 0.5, **timing),
        "vectorized_ensemble_16_mlp_vmap": _ensemble_case(
            "vectorized_ensemble_16_mlp_vmap", "vmap", None, **timing),
        "greedy_soup_digits": _soup_case(threads, results_dir),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(time_parser(__doc__, warmup=5, repeats=30), argv)
    return run(warmup=args.warmup, repeats=args.repeats, threads=args.threads,
               results_dir=args.results_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
