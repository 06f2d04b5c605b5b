"""Apply a :class:`~.plan.ParallelPlan` with torch's own engine: DTensor tensor parallel
(``parallelize_module``), FSDP2 (``fully_shard``) or DDP, on a named device mesh."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import ParallelError
from .plan import ParallelPlan, plan_from

__all__ = ["mesh_dims", "parallelize"]


def mesh_dims(mesh: Any) -> tuple[Any, Any]:
    """``(dp_mesh, tp_mesh)`` of a mesh named by :func:`~.mesh.make_mesh` (either may be
    ``None`` when the mesh lacks that dimension)."""
    names = tuple(getattr(mesh, "mesh_dim_names", None) or ())
    if not names or set(names) - {"pp", "dp", "tp"}:
        raise ParallelError(
            f"the mesh needs named dimensions 'dp' and/or 'tp' (make_mesh), got {names or None}"
        )
    return (mesh["dp"] if "dp" in names else None), (mesh["tp"] if "tp" in names else None)


def _tp_style(style: str, sequence_parallel: bool) -> Any:
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
    )

    if style == "colwise":
        return ColwiseParallel()
    if style == "rowwise":
        return RowwiseParallel(output_layouts=Shard(1)) if sequence_parallel else RowwiseParallel()
    if style == "sequence":
        return SequenceParallel()
    if style == "gather_input":
        return PrepareModuleInput(
            input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
        )
    return PrepareModuleOutput(output_layouts=(Replicate(),), desired_output_layouts=(Shard(1),))


_ATTENTION_STYLES = {"q_proj": "colwise", "k_proj": "colwise", "v_proj": "colwise",
                     "out_proj": "rowwise"}


def _localise_heads(model: nn.Module, plan: ParallelPlan, tp: int) -> None:
    """Attention layers sharded by ``plan`` keep ``heads / tp`` (and ``kv_heads / tp``) heads
    per rank; their q/k/v must be column-wise and out_proj row-wise together."""
    from ..layers.attention import MultiHeadAttention

    styles = plan.tp_styles
    sharded = []
    for path, attn in model.named_modules():
        if not isinstance(attn, MultiHeadAttention):
            continue
        got = {name: styles.get(f"{path}.{name}") for name in _ATTENTION_STYLES}
        if not any(got.values()):
            continue
        if got != _ATTENTION_STYLES:
            raise ParallelError(
                f"{path}: tensor parallel needs q/k/v_proj colwise and out_proj rowwise "
                f"together, the plan has {got}"
            )
        if attn.num_heads % tp or attn.num_kv_heads % tp:
            raise ParallelError(
                f"{path}: {attn.num_heads} heads ({attn.num_kv_heads} kv) do not divide "
                f"over tp={tp}"
            )
        sharded.append(attn)
    for attn in sharded:  # every layer checked before any is changed
        attn.num_heads //= tp
        attn.num_kv_heads //= tp


def apply_tensor_parallel(model: nn.Module, plan: ParallelPlan, tp_mesh: Any) -> None:
    """Shard ``model`` in place over ``tp_mesh`` as ``plan.tp_styles`` says."""
    from torch.distributed.tensor.parallel import parallelize_module

    styles = plan.tp_styles
    if not styles:
        return
    _localise_heads(model, plan, tp_mesh.size())
    parallelize_module(
        model, tp_mesh, {p: _tp_style(s, plan.sequence_parallel) for p, s in styles.items()}
    )


def apply_fsdp(model: nn.Module, plan: ParallelPlan, dp_mesh: Any, **fsdp_kwargs: Any) -> None:
    """``fully_shard`` each FSDP unit of ``plan`` (in order), then the root."""
    from torch.distributed.fsdp import fully_shard

    for path in plan.fsdp_units:
        fully_shard(model.get_submodule(path), mesh=dp_mesh, **fsdp_kwargs)
    fully_shard(model, mesh=dp_mesh, **fsdp_kwargs)


def parallelize(
    model: nn.Module, mesh: Any, plan: Any = "auto", **fsdp_kwargs: Any
) -> nn.Module:
    """Make ``model`` run over ``mesh`` (from :func:`~.mesh.make_mesh`) as ``plan`` says.

    ``plan="auto"`` derives it from block roles (:func:`~.plan.derive_plan` with the mesh's
    tp size); a :class:`~.plan.ParallelPlan` or its dict form (globs allowed) is used as
    given. Tensor parallel is applied first (over ``mesh["tp"]``), then FSDP2 per unit and
    at the root over ``mesh["dp"]`` (``fsdp_kwargs`` go to ``fully_shard``:
    ``mp_policy=``, ``reshard_after_forward=``). A plan with ``fsdp=False`` wraps the
    model in ``DistributedDataParallel`` instead (returned; the others modify ``model`` in
    place and return it). Build the model identically (same seed) on every rank.
    """
    dp_mesh, tp_mesh = mesh_dims(mesh)
    tp = tp_mesh.size() if tp_mesh is not None else 1
    resolved = plan_from(model, plan, tp)
    if resolved.tp != tp:
        raise ParallelError(f"the plan is for tp={resolved.tp} but the mesh has tp={tp}")
    if dp_mesh is not None and not resolved.fsdp and resolved.tp_styles:
        raise ParallelError("DDP (fsdp=False) does not combine with tensor parallel: use FSDP2")
    if tp_mesh is not None:
        apply_tensor_parallel(model, resolved, tp_mesh)
    if dp_mesh is None:
        return model
    if resolved.fsdp:
        apply_fsdp(model, resolved, dp_mesh, **fsdp_kwargs)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, process_group=dp_mesh.get_group())
