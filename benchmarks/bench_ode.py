"""Neural ODE blocks: our ODEBlock vs direct torchdiffeq, and adjoint vs backprop memory.

Forward + backward, float32, 2 threads (``python -m benchmarks.bench_ode``); results go to
``benchmarks/results/ode_meta.json``. Cases (ours / peer):

* ``ode_block_vs_torchdiffeq``: ``ODEBlock(ConvODEFunc(32))`` (dopri5, rtol = atol = 1e-3)
  vs ``torchdiffeq.odeint`` called directly on the same function, B=8, 32×16×16 — step time
  ≤ 1.05 (the NFE counting and shape check are the whole overhead);
* ``adjoint_vs_backprop_100_steps``: the same block with ``adjoint=True`` vs back-propagating
  through the solver, RK4 with 100 steps: the memory a training forward leaves alive for the
  backward pass, output included (:func:`held_bytes`) ≤ 0.2× (``extra["memory_ratio"]``); the
  time ratio is reported (the adjoint solves a second ODE backwards; at most 3 repeats).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torchdiffeq
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect.layers.ode import ConvODEFunc, ODEBlock

NAME = "ode_meta"
B, C, HW = 8, 32, 16
TOL = {"rtol": 1e-3, "atol": 1e-3}


class DirectODE(nn.Module):
    """The peer: ``torchdiffeq.odeint`` called as its README shows, no wrapper."""

    def __init__(self, func: nn.Module, **kwargs: Any) -> None:
        super().__init__()
        self.func, self.kwargs = func, kwargs
        self.register_buffer("t", torch.tensor([0.0, 1.0]), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torchdiffeq.odeint(self.func, x, self.t, **self.kwargs)[-1]


class _Storages(TorchDispatchMode):
    """Weak references to every storage an op outputs while active."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                self.seen[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
        return out


def held_bytes(module: nn.Module, x: Tensor) -> int:
    """Bytes a training forward creates that are still alive when it returns (the output and
    everything saved for backward; parameters and the input excluded)."""
    mode = _Storages()
    with mode:
        out = module(x)
    keep = {p.untyped_storage()._cdata for p in [*module.parameters(), x]}
    total = sum(n for k, (ref, n) in mode.seen.items() if k not in keep and not ref.expired())
    del out
    return total


def train_step(module: nn.Module, x: Tensor) -> Callable[[], None]:
    """One forward + backward with fresh gradients (parameters and input)."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    return step


def run(
    *, warmup: int, repeats: int, threads: int, results_dir: str = RESULTS_DIR
) -> dict[str, Any]:
    torch.manual_seed(0)
    results = {}
    common = {"warmup": warmup, "repeats": repeats, "threads": threads, "results_dir": results_dir}
    x = torch.randn(B, C, HW, HW, requires_grad=True)
    func = ConvODEFunc(C)
    ours = ODEBlock(func, solver="dopri5", **TOL)
    peer = DirectODE(func, method="dopri5", **TOL)
    ours(x)
    results["ode_block_vs_torchdiffeq"] = compare(
        NAME,
        train_step(ours, x),
        train_step(peer, x),
        case="ode_block_vs_torchdiffeq",
        target=1.05,
        label_peer="torchdiffeq.odeint",
        extra={"B": B, "C": C, "HW": HW, "solver": "dopri5", **TOL, "nfe": ours.nfe_forward},
        **common,
    )

    fixed = {"solver": "rk4", "step_size": 0.01}
    adjoint = ODEBlock(func, adjoint=True, **fixed)
    backprop = ODEBlock(func, **fixed)
    held = {"adjoint": held_bytes(adjoint, x), "backprop": held_bytes(backprop, x)}
    ratio = held["adjoint"] / held["backprop"]
    results["adjoint_vs_backprop_100_steps"] = compare(
        NAME,
        train_step(adjoint, x),
        train_step(backprop, x),
        case="adjoint_vs_backprop_100_steps",
        label_ours="ODEBlock(adjoint=True)",
        label_peer="ODEBlock(adjoint=False)",
        extra={
            "B": B,
            "C": C,
            "HW": HW,
            **fixed,
            "steps": 100,
            "held_bytes_adjoint": held["adjoint"],
            "held_bytes_backprop": held["backprop"],
            "memory_ratio": ratio,
            "memory_target": 0.2,
        },
        **{**common, "warmup": min(warmup, 1), "repeats": min(repeats, 3)},
    )
    print(f"adjoint / backprop memory held for backward: {ratio:.4f} (target <= 0.2)")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(time_parser(__doc__, warmup=2, repeats=10), argv)
    return run(
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
