"""Rank function measuring what FSDP2 really allocates per rank (for tests/parallel/test_planner.py)."""

from __future__ import annotations

from typing import Any

import torch


def _local_bytes(t: torch.Tensor) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def _storage(t: torch.Tensor) -> tuple[int, int] | None:
    """``(data pointer, bytes)`` of the storage behind ``t``; None when it has none (a DTensor
    wrapper) or it was freed (FSDP2 frees the gathered parameters after use)."""
    try:
        storage = (t.to_local() if hasattr(t, "to_local") else t).untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):
        return None


def saved_bytes(output: torch.Tensor, exclude: set[int]) -> int:
    """Bytes of the storages autograd's graph behind ``output`` keeps (walked node by node
    through each node's ``_saved_*`` attributes), each storage once, ``exclude`` left out."""
    seen: dict[int, int] = {}
    stack, visited = [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            try:
                value = getattr(node, name)
            except RuntimeError:  # freed or undefined
                continue
            for t in value if isinstance(value, (tuple, list)) else (value,):
                found = _storage(t) if isinstance(t, torch.Tensor) else None
                if found is not None and found[0] not in exclude:
                    seen[found[0]] = found[1]
        stack.extend(fn for fn, _ in node.next_functions)
    return sum(seen.values())


def _one_step(kwargs: dict[str, Any], batch: int, seq_len: int, rank: int,
              dp: int, tp: int) -> dict[str, int]:
    """One AdamW step of a LLaMA-shaped model parallelised by
    :func:`netarchitect.parallel.parallelize` on a ``dp x tp`` mesh: the rank's local
    parameter, gradient and optimiser-state bytes and the bytes autograd saved in forward."""
    from netarchitect import create_model
    from netarchitect.parallel.apply import parallelize
    from netarchitect.parallel.mesh import make_mesh

    model = create_model("llama-7b", seed=0, **kwargs)
    parallelize(model, make_mesh(dp * tp, dp=dp, tp=tp))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(rank // tp)
    ids = torch.randint(0, kwargs["vocab_size"], (batch, seq_len), generator=generator)
    logits = model(ids)
    exclude = {found[0] for p in model.parameters() if (found := _storage(p)) is not None}
    saved = saved_bytes(logits, exclude)
    logits.float().logsumexp(-1).mean().backward()
    optimizer.step()
    params = list(model.parameters())
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return {
        "params": sum(_local_bytes(p) for p in params),
        "grads": sum(_local_bytes(p.grad) for p in params if p.grad is not None),
        "optimizer": sum(_local_bytes(t) for t in state),
        "activations": saved,
        "outputs": _local_bytes(logits),
    }


def layouts_bytes(rank: int, world_size: int, kwargs: dict[str, Any], batch: int,
                  seq_len: int) -> dict[str, dict[str, int]]:
    """:func:`_one_step` under FSDP2 over 2 ranks, then tensor parallel over 2 ranks."""
    return {
        "fsdp": _one_step(kwargs, batch, seq_len, rank, dp=world_size, tp=1),
        "tp": _one_step(kwargs, batch, seq_len, rank, dp=1, tp=world_size),
    }
