"""Rank functions and shared fixtures of the parallel-plan tests (importable in spawned ranks).

Each check builds the same seeded float64 model on every rank, runs one training step
(loss + backward) under a layout, and returns the loss and every full gradient, which the
test compares with the single-process step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import netarchitect as na
from netarchitect.models.resnet import resnet

VOCAB = 64
DTYPE = torch.float64


def tiny_gpt(**overrides: Any) -> nn.Module:
    """The registered gpt2-tiny shape (2 blocks, 2 heads, dim 64) with a small vocabulary."""
    return na.create_model("gpt2-tiny", vocab_size=VOCAB, seed=0, dtype=DTYPE, **overrides)


def tiny_llama() -> nn.Module:
    """A LLaMA-shaped decoder: RoPE, grouped-query attention (4 heads, 2 kv), SwiGLU."""
    return na.create_model("llama-tiny", vocab_size=VOCAB, dim=32, depth=2, num_heads=4,
                           num_kv_heads=2, hidden_dim=64, max_positions=16, seed=0, dtype=DTYPE)


def tiny_resnet() -> nn.Module:
    """A two-stage ResNet (GroupNorm: batch statistics would differ between a rank's half
    batch and the whole one)."""
    return resnet(layers=(1, 1), widths=(8, 16), stem_width=8, num_classes=10, img_size=16,
                  norm_layer="groupnorm", seed=0, dtype=DTYPE)


def gpt_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (4, 8), generator=g)
    return ids, torch.roll(ids, -1, dims=1)


def resnet_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 16, 16, generator=g, dtype=DTYPE)
    return x, torch.randint(0, 10, (4,), generator=g)


def loss_fn(out: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def full(t: Tensor) -> Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def step(model: nn.Module, inner: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Loss and ``{name: full gradient}`` of one step (``inner``: the unwrapped model), as
    numpy arrays: tensors sent between processes would go through shared memory, which a
    rank that has exited no longer serves."""
    loss = loss_fn(model(x), y)
    loss.backward()
    grads = {n: full(p.grad).detach().numpy().copy() for n, p in inner.named_parameters()}
    return {"loss": float(loss.detach()), "grads": grads}


BUILDERS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple[Tensor, Tensor]]]] = {
    "gpt": (tiny_gpt, gpt_batch),
    "llama": (tiny_llama, gpt_batch),
    "resnet": (tiny_resnet, resnet_batch),
}

#: (name, model, mesh shape or None for a 1-D mesh, plan arguments, batch split over ranks)
LAYOUTS = [
    ("ddp", "gpt", ("dp",), {"fsdp": False}, True),
    ("fsdp", "gpt", ("dp",), {}, True),
    ("tp", "gpt", ("tp",), {"tp": 2}, False),
    ("tp_sp", "gpt", ("tp",), {"tp": 2, "sequence_parallel": True}, False),
    ("fsdp2x1", "gpt", (2, 1), {}, True),
    ("fsdp1x2", "gpt", (1, 2), {"tp": 2}, False),
    ("tp", "llama", ("tp",), {"tp": 2}, False),
    ("ddp", "resnet", ("dp",), {"fsdp": False}, True),
    ("fsdp", "resnet", ("dp",), {}, True),
]


def _mesh(shape: tuple[Any, ...]) -> Any:
    from torch.distributed.device_mesh import init_device_mesh

    from netarchitect.parallel.mesh import make_mesh

    if isinstance(shape[0], str):
        return init_device_mesh("cpu", (2,), mesh_dim_names=shape)
    return make_mesh(dp=shape[0], tp=shape[1])


def parity_rank(rank: int, world_size: int) -> dict[str, Any]:
    """Every layout of :data:`LAYOUTS` on this rank; rank 0's results are compared."""
    from netarchitect.parallel.apply import parallelize
    from netarchitect.parallel.plan import derive_plan

    results: dict[str, Any] = {}
    for name, model_name, shape, plan_args, split in LAYOUTS:
        build, batch = BUILDERS[model_name]
        model = build()
        x, y = batch()
        if split:
            x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        wrapped = parallelize(model, _mesh(shape), derive_plan(model, **plan_args))
        results[f"{model_name}/{name}"] = step(wrapped, model, x, y)
    results["errors"] = _bad_inputs(world_size)
    return results


def _bad_inputs(world_size: int) -> list[str]:
    """Messages of the user mistakes that need a process group."""
    from netarchitect.parallel.apply import parallelize
    from netarchitect.parallel.errors import ParallelError
    from netarchitect.parallel.mesh import make_mesh
    from netarchitect.parallel.plan import derive_plan

    messages = []
    attempts: list[Callable[[], Any]] = [
        lambda: make_mesh(world_size + 1),
        lambda: make_mesh(dp=2, tp=2),
        lambda: parallelize(tiny_gpt(), make_mesh(tp=2), derive_plan(tiny_gpt(), tp=1)),
        lambda: parallelize(tiny_gpt(), make_mesh(tp=2),
                            {"modules": {"nodes.nope.*": {"fsdp": True}}}),
        lambda: parallelize(tiny_gpt(), make_mesh(tp=2), derive_plan(tiny_gpt(), tp=2, fsdp=False)),
    ]
    for attempt in attempts:
        try:
            attempt()
        except ParallelError as exc:
            messages.append(str(exc))
        else:  # pragma: no cover - reported as a failure by the test
            messages.append("no error")
    return messages


def pipeline_model() -> nn.Module:
    """gpt2-tiny shape with 4 blocks and an untied head."""
    return tiny_gpt(tie_embeddings=False, depth=4)


def pipeline_rank(rank: int, world_size: int) -> dict[str, Any]:
    """A 2-stage pipeline step under GPipe and 1F1B, and 1F1B with the head tied to the
    embedding (``"tied"``): this rank's loss and stage gradients."""
    from netarchitect.parallel.pipeline import PipelineRunner, pipeline_stage, split_model

    results: dict[str, Any] = {}
    for schedule in ("gpipe", "1f1b", "tied"):
        model = pipeline_model() if schedule != "tied" else tiny_gpt(depth=4)
        x, y = gpt_batch()
        split = split_model(model, x, world_size)
        stage = pipeline_stage(model, split)
        runner = PipelineRunner(stage, n_microbatches=2, loss_fn=loss_fn,
                                schedule="1f1b" if schedule == "tied" else schedule)
        loss = runner.step(x, target=y)
        results[schedule] = {
            "loss": None if loss is None else float(loss),
            "grads": {f"nodes.{n}": p.grad.numpy().copy()
                      for n, p in stage.submod.nodes.named_parameters()},
            "points": split.points,
        }
    return results


def all_checks_rank(rank: int, world_size: int) -> dict[str, Any]:
    """Every 2-process check in one spawn (each spawn costs seconds of imports)."""
    return {"parity": parity_rank(rank, world_size), "pipeline": pipeline_rank(rank, world_size)}


@functools.cache
def two_rank_results() -> list[dict[str, Any]]:
    """:func:`all_checks_rank` on 2 gloo processes, run once per test session."""
    from netarchitect.parallel._spawn import run_ranks

    return run_ranks(all_checks_rank, 2, timeout=240)
