"""Resize a model's token vocabulary, keeping tied input/output embeddings tied.

The first ``min(old, new)`` rows are kept. New rows are the mean of the old rows
(``init="mean"``, as transformers' ``mean_resizing`` centres them; new output biases are
zero) or come from the model's initialisation (``init="random"``, seeded).

- spec-built: the ``token_embedding`` node's ``vocab_size`` and every ``lm_head`` node
  with the old vocabulary as ``out_features`` change; the spec's ``tie`` keeps a tied
  head tied;
- transformers: the model's own ``resize_token_embeddings`` on a copy (it re-ties);
- other modules: the first ``nn.Embedding`` (or the one named ``embedding``) and the
  ``nn.Linear`` layers sharing its weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..network import Network
from ._edit import copy_model, is_spec_built, rebuild, seeded, spec_data, under

__all__ = ["resize_token_embeddings"]

_INITS = ("mean", "random")


def resize_token_embeddings(
    model: nn.Module,
    new_vocab: int,
    *,
    init: str = "mean",
    seed: int | None = None,
    embedding: str | None = None,
) -> nn.Module:
    """A copy of ``model`` with a vocabulary of ``new_vocab`` tokens (see the module doc)."""
    if isinstance(new_vocab, bool) or not isinstance(new_vocab, int) or new_vocab < 1:
        raise SpecError(f"new_vocab={new_vocab!r} must be a positive integer", path="new_vocab")
    if init not in _INITS:
        raise SpecError(f"init={init!r} must be one of {', '.join(_INITS)}", path="init")
    if is_spec_built(model):
        return _resize_spec(model, new_vocab, init, seed)  # type: ignore[arg-type]
    new: Any = copy_model(model)
    if callable(getattr(new, "resize_token_embeddings", None)) and hasattr(new, "config"):
        with seeded(seed):
            new.resize_token_embeddings(new_vocab, mean_resizing=init == "mean")
        return new
    _resize_modules(new, new_vocab, init, seed, embedding)
    return new


def _fill(old: Tensor, new: Tensor, init: str, is_bias: bool) -> bool:
    """Rows ``[:n]`` from ``old``; the others the old mean (or zero for a bias)."""
    n = min(old.shape[0], new.shape[0])
    new[:n].copy_(old[:n])
    if new.shape[0] > n and init == "mean":
        new[n:] = 0.0 if is_bias else old.mean(dim=0, keepdim=True).to(new.dtype)
    return True


def _resize_spec(model: Network, new_vocab: int, init: str, seed: int | None) -> Network:
    data = spec_data(model)
    tables = [n for n in data["nodes"] if n["block"] == "token_embedding"]
    role = data.get("roles", {}).get("embedding")
    tables = [n for n in tables if n["id"] == role] if role else tables
    if len(tables) != 1:
        found = [n["id"] for n in tables]
        raise SpecError(f"{data['name']!r} has {len(found)} token_embedding nodes {found}; "
                        "one is needed", path="new_vocab")
    table = tables[0]
    old_vocab = table["params"]["vocab_size"]
    table["params"]["vocab_size"] = new_vocab
    changed = [table["id"]]
    for node in data["nodes"]:
        if node["block"] == "lm_head" and node.get("params", {}).get("out_features") == old_vocab:
            node["params"]["out_features"] = new_vocab
            changed.append(node["id"])
    keys = under(changed)

    def adapt(key: str, old: Tensor, new: Tensor) -> bool:
        return keys(key) and _fill(old, new, init, key.endswith(".bias"))

    return rebuild(model, data, seed=seed, adapt=adapt)


def _resize_modules(model: nn.Module, new_vocab: int, init: str, seed: int | None,
                    name: str | None) -> None:
    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if name is not None:
        embeddings = [(n, m) for n, m in embeddings if n == name]
    if not embeddings:
        where = f" named {name!r}" if name else ""
        raise SpecError(f"{type(model).__name__} has no nn.Embedding{where} to resize",
                        path="embedding")
    _, emb = embeddings[0]
    old_weight = emb.weight
    tied = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight is old_weight]
    with seeded(seed):
        fresh = nn.Embedding(new_vocab, emb.embedding_dim, padding_idx=_padding(emb, new_vocab),
                             device=old_weight.device, dtype=old_weight.dtype)
    with torch.no_grad():
        _fill(old_weight, fresh.weight, init, False)
    emb.weight = fresh.weight
    emb.num_embeddings = new_vocab
    emb.padding_idx = fresh.padding_idx
    for linear in tied:
        linear.weight = emb.weight
        linear.out_features = new_vocab
        if linear.bias is not None:
            bias = torch.zeros(new_vocab, device=linear.bias.device, dtype=linear.bias.dtype)
            with torch.no_grad():
                _fill(linear.bias, bias, init, True)
            linear.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)


def _padding(emb: nn.Embedding, new_vocab: int) -> Any:
    idx = emb.padding_idx
    return idx if idx is not None and idx < new_vocab else None
