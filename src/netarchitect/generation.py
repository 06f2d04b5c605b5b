"""Autoregressive decoding for language models: greedy, temperature, top-k and nucleus sampling.

Works with any model whose forward is ``model(input_ids, *, attention_mask=, kv_cache=)``
and returns logits (B, T, V) — or an object with ``.logits`` — such as a spec-built
:class:`~netarchitect.models._lm_base.CausalLM`; with ``use_cache`` the model must also
have ``new_cache(max_length)`` (a network's gives a
:class:`~netarchitect.layers.kv_cache.ModelCache` holding one cache per attention block;
those of encoder-decoder models also keep the projected encoder output). ``generate`` makes fresh caches on each call, so whatever they hold is
computed once per call and reused at every step. A forward that takes ``logits_to_keep``
is asked for the last position only.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["filter_logits", "generate"]


def filter_logits(
    logits: Tensor, *, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Keep the ``top_k`` largest logits and the smallest nucleus of probability ``>= top_p``.

    Removed entries become ``-inf``; the most likely token is always kept.
    Shapes: (B, V) -> (B, V).
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass ranked above each token
        remove = torch.zeros_like(before, dtype=torch.bool).scatter(1, order, before > top_p)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def _check(
    input_ids: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    do_sample: bool | None,
) -> bool:
    """Validate the arguments; return whether to sample (else greedy)."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError("input_ids must be an integer tensor of shape (B, T)")
    if type(max_new_tokens) is not int or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] or None")
    if do_sample and temperature == 0:
        raise ValueError("do_sample=True needs temperature > 0")
    return temperature > 0 if do_sample is None else do_sample


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    names = getattr(model, "context_names", None)  # a spec-built network: its declared context
    if names is not None:
        return "logits_to_keep" in names
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _logits(
    model: nn.Module, ids: Tensor, mask: Tensor | None, cache: Any, last_only: bool
) -> Tensor:
    kwargs: dict[str, Any] = {"logits_to_keep": 1} if last_only else {}
    if mask is not None:
        kwargs["attention_mask"] = mask
    if cache is not None:
        kwargs["kv_cache"] = cache
    out = model(ids, **kwargs)
    return getattr(out, "logits", out)


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    do_sample: bool | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    attention_mask: Tensor | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Extend ``input_ids`` by up to ``max_new_tokens`` tokens, one at a time.

    Decoding is **greedy** (argmax) when ``temperature == 0`` or ``do_sample=False``;
    otherwise tokens are sampled from ``softmax(logits / temperature)`` after
    :func:`filter_logits` (``top_k``, ``top_p``). ``do_sample=None`` (default) samples
    exactly when ``temperature > 0`` — note this differs from Hugging Face, whose
    default is greedy. Sampling draws from a ``torch.Generator`` seeded with ``seed``
    (the global RNG when ``None``), so a seed reproduces the same tokens.

    A sequence that emits ``eos_token_id`` (one id or several) is finished: later
    positions get ``pad_token_id`` (default: the first eos id); decoding stops once
    every sequence is finished. ``attention_mask`` (1 = real token) marks padding of
    a batch of prompts of different lengths (left padding is the usual choice).
    With ``use_cache`` each step feeds only the new token and reuses the model's
    key/value cache; without it every step re-runs the whole sequence — both give the
    same greedy tokens. The model runs in eval mode (its mode is restored after).

    Shapes:
        input_ids: (B, T) -> (B, T + n), ``n <= max_new_tokens``.
    """
    sample = _check(input_ids, max_new_tokens, temperature, top_k, top_p, do_sample)
    eos = None
    if eos_token_id is not None:
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        eos = torch.tensor(ids, device=input_ids.device)
        pad_token_id = ids[0] if pad_token_id is None else pad_token_id
    cache = None
    if use_cache:
        new_cache = getattr(model, "new_cache", None)
        if not callable(new_cache):
            raise TypeError(f"{type(model).__name__} has no new_cache(); pass use_cache=False")
        cache = new_cache(input_ids.shape[1] + max_new_tokens)
    generator = None
    if sample and seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    last_only = _accepts_logits_to_keep(model)
    was_training = model.training
    model.eval()
    try:
        tokens, step_ids, mask = input_ids, input_ids, attention_mask
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            logits = _logits(model, step_ids if use_cache else tokens, mask, cache, last_only)
            scores = logits[:, -1, :].float()  # (B, V)
            if sample:
                scores = filter_logits(scores / temperature, top_k=top_k, top_p=top_p)
                probs = scores.softmax(dim=-1)
                next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                next_ids = scores.argmax(dim=-1)
            if eos is not None:
                next_ids = next_ids.masked_fill(finished, pad_token_id)  # type: ignore[arg-type]
                finished = finished | torch.isin(next_ids, eos)
            step_ids = next_ids[:, None].to(input_ids.dtype)  # (B, 1)
            tokens = torch.cat((tokens, step_ids), dim=1)
            if mask is not None:
                mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
            if eos is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return tokens
