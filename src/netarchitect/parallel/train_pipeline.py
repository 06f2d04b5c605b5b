"""Pipeline-parallel training for ``netarchitect train --pp S``: one stage per process.

The network is cut into ``S`` stages at block boundaries balancing measured FLOPs
(:func:`~netarchitect.parallel.pipeline.split_model`); rank ``i`` trains stage ``i`` under
the GPipe or 1F1B schedule. Each optimizer step's batch (``batch_size × accumulate``
samples) is cut into ``S × accumulate`` equal micro-batches, so the loss (the mean of the
micro-batch means) and the gradients equal the single-process run's. Gradients and AdamW
states exist only for a rank's own stage; the gradient norm for clipping is reduced over
the stages. Every rank keeps the whole network's weights: before evaluation and the final
save each stage broadcasts its (flattened) weights and buffers to the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ParallelError
from .pipeline import PipelineRunner, PipelineSplit, pipeline_stage, split_model

__all__ = ["PipelineTraining", "check_pipeline"]


def check_pipeline(args: Any, model: nn.Module, input_shape: tuple[int, ...],
                   sizes: dict[str, int]) -> PipelineSplit:
    """Refuse a ``--pp`` layout train cannot run, before any process starts; returns the
    split (measured on ``meta``)."""
    if args.fsdp or args.tp > 1 or sizes["dp"] > 1:
        raise ParallelError(
            f"--pp {args.pp}: pipeline training runs one stage per process; use --nproc "
            f"{args.pp} without --fsdp or --tp (combining pipeline with data or tensor "
            "parallel is not supported by train)"
        )
    split = split_model(model, torch.empty((2, *input_shape), device="meta"), args.pp)
    if args.batch_size % args.pp:
        raise ParallelError(
            f"--batch-size {args.batch_size} is not divisible by --pp {args.pp} (each batch is "
            f"cut into {args.pp} equal micro-batches)"
        )
    return split


class PipelineTraining:
    """This rank's stage of ``base`` with its schedule, gradient clipping over all stages and
    the weight exchange that lets every rank evaluate and save the whole network."""

    def __init__(self, base: nn.Module, example: Tensor, *, stages: int, microbatches: int,
                 schedule: str, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 device: torch.device) -> None:
        import torch.distributed as dist

        self.base = base
        self.split = split_model(base, example, stages)
        self.stage = pipeline_stage(base, self.split, device=device)
        self.module = self.stage.submod
        self.runner = PipelineRunner(self.stage, n_microbatches=microbatches, loss_fn=loss_fn,
                                     schedule=schedule)
        self.last_rank = dist.get_world_size() - 1

    def step(self, x: Tensor, target: Tensor) -> float:
        """One forward and backward over the batch; the mean loss, on every rank."""
        import torch.distributed as dist

        loss = self.runner.step(x, target=target)
        value = torch.zeros((), dtype=torch.float64, device=x.device)
        if loss is not None:
            value += loss.double()
        dist.broadcast(value, src=self.last_rank)
        return float(value)

    def clip(self, max_norm: float) -> float:
        """Clip the gradient norm of the whole network (every stage's gradients, a parameter
        shared by stages counted once) to ``max_norm``; returns it (``nan`` if 0)."""
        import torch.distributed as dist

        if max_norm <= 0:
            return math.nan
        own = [p.grad for p in self.module.owned_parameters() if p.grad is not None]
        square = torch.zeros((), dtype=torch.float64)
        for grad in own:
            square += grad.detach().double().pow(2).sum().cpu()
        dist.all_reduce(square)
        total = math.sqrt(float(square))
        scale = min(1.0, max_norm / (total + 1e-6))
        if scale < 1.0:
            for p in self.module.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale)
        return total

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Broadcast each stage's parameters and buffers from its rank to every other rank."""
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        for rank, node_ids in enumerate(self.split.stages):
            tensors = [t for n in node_ids for t in self.base.nodes[n].state_dict().values()]
            for dtype in dict.fromkeys(t.dtype for t in tensors):
                group = [t for t in tensors if t.dtype == dtype]
                flat = _flatten_dense_tensors(group)
                dist.broadcast(flat, src=rank)
                for t, value in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
                    t.copy_(value)

