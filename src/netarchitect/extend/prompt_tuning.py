"""Prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021) for our Transformers.

Both work on any model built from our :class:`~netarchitect.layers.token_embedding.TokenEmbedding`
and :class:`~netarchitect.layers.transformer.TransformerBlock` (GPT-2, LLaMA, BERT and the
other sequence families), through forward hooks, so the base model and its parameter
names stay as they are and the base weights are frozen:

- **prompt tuning**: ``P`` learned vectors are prepended to the embedding output (after
  positions, so real tokens keep theirs); every block sees ``P + T`` tokens (an
  ``attention_mask`` is extended with ones) and the last block's output drops the ``P``
  prompt positions again, so heads, poolers and logits keep their shapes;
- **prefix tuning**: each block's self-attention gets ``P`` learned key/value vectors per
  head in front of its own (a pre-filled
  :class:`~netarchitect.layers.kv_cache.KVCache`); queries see all of them.

With ``P = 0`` outputs equal the base model's. Incremental decoding with a ``kv_cache`` is
not supported while prompts are attached (:class:`PromptTuningError`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import NetArchitectError, SpecError
from ..layers.kv_cache import KVCache
from ..layers.token_embedding import TokenEmbedding
from ..layers.transformer import TransformerBlock

__all__ = [
    "PrefixKV",
    "PromptTuningError",
    "SoftPrompt",
    "add_prefix_tuning",
    "add_prompt_tuning",
    "prompt_parameters",
    "remove_prompts",
]

PROMPT, PREFIX = "soft_prompt", "prefix_kv"


class PromptTuningError(NetArchitectError):
    """Prompt or prefix tuning does not fit the model or the call."""


class SoftPrompt(nn.Module):
    """``num_tokens`` learned input vectors of width ``dim``. Shapes: prompt (P, dim)."""

    def __init__(self, num_tokens: int, dim: int, *, init: Tensor | None = None,
                 std: float = 0.02, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.randn(num_tokens, dim, device=device, dtype=dtype) * std
                                   if init is None else init.detach().clone())

    @property
    def num_tokens(self) -> int:
        return self.prompt.shape[0]

    def expand(self, batch: int) -> Tensor:
        return self.prompt.unsqueeze(0).expand(batch, -1, -1)  # (B, P, dim)


class PrefixKV(nn.Module):
    """Learned keys and values for one attention layer. Shapes: key, value (H_kv, P, D)."""

    def __init__(self, num_tokens: int, num_kv_heads: int, head_dim: int, *, std: float = 0.02,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        shape = (num_kv_heads, num_tokens, head_dim)
        self.key = nn.Parameter(torch.randn(shape, device=device, dtype=dtype) * std)
        self.value = nn.Parameter(torch.randn(shape, device=device, dtype=dtype) * std)

    @property
    def num_tokens(self) -> int:
        return self.key.shape[1]

    def cache(self, batch: int) -> KVCache:
        cache = KVCache()
        cache.update(self.key.unsqueeze(0).expand(batch, -1, -1, -1),
                     self.value.unsqueeze(0).expand(batch, -1, -1, -1))  # (B, H_kv, P, D)
        return cache


def _check_no_cache(kwargs: dict[str, Any]) -> None:
    if kwargs.get("kv_cache") is not None:
        raise PromptTuningError("prompt/prefix tuning does not support decoding with a kv_cache")


def _extend_mask(kwargs: dict[str, Any], n: int) -> None:
    mask = kwargs.get("attention_mask")
    if mask is not None and n:
        ones = torch.ones(mask.shape[0], n, dtype=mask.dtype, device=mask.device)
        kwargs["attention_mask"] = torch.cat([ones, mask], dim=1)


class _Prepend:
    """Embedding forward hook: ``[prompt; x]``."""

    def __init__(self, prompt: SoftPrompt) -> None:
        self.prompt = prompt

    def __call__(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        if not self.prompt.num_tokens:
            return output
        return torch.cat([self.prompt.expand(output.shape[0]).to(output.dtype), output], dim=1)


class _BlockPrompt:
    """Block pre-hook (mask for the prompt tokens) and, on the last block, output hook."""

    def __init__(self, prompt: SoftPrompt) -> None:
        self.prompt = prompt

    def pre(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
        _check_no_cache(kwargs)
        _extend_mask(kwargs, self.prompt.num_tokens)
        return args, kwargs

    def post(self, module: nn.Module, args: Any, kwargs: Any, output: Tensor) -> Tensor:
        return output[:, self.prompt.num_tokens :]


class _BlockPrefix:
    """Block pre-hook: attention over ``[prefix; keys]`` via a pre-filled cache."""

    def __init__(self, prefix: PrefixKV) -> None:
        self.prefix = prefix

    def __call__(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
        _check_no_cache(kwargs)
        if self.prefix.num_tokens:
            x = args[0] if args else kwargs["x"]
            kwargs["kv_cache"] = self.prefix.cache(x.shape[0])
            _extend_mask(kwargs, self.prefix.num_tokens)
        return args, kwargs


def _parts(model: nn.Module) -> tuple[TokenEmbedding, list[TransformerBlock]]:
    embeds = [m for m in model.modules() if isinstance(m, TokenEmbedding)]
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    if len(embeds) != 1 or not blocks:
        raise PromptTuningError(
            f"prompt/prefix tuning needs one TokenEmbedding and TransformerBlocks; the model has "
            f"{len(embeds)} embedding(s) and {len(blocks)} block(s)"
        )
    if any(isinstance(m, (SoftPrompt, PrefixKV)) for m in model.modules()):
        raise PromptTuningError("the model already has prompts: remove_prompts first")
    return embeds[0], blocks


def _check_tokens(num_tokens: int) -> None:
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise SpecError(f"num_tokens must be an int >= 0, got {num_tokens!r}", path="num_tokens")


def _freeze_but(model: nn.Module, module: nn.Module) -> None:
    keep = {id(p) for p in module.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def add_prompt_tuning(model: nn.Module, num_tokens: int, *, from_vocab: bool = True,
                      seed: int | None = None) -> SoftPrompt:
    """Prepend ``num_tokens`` learned soft tokens (in place); returns the :class:`SoftPrompt`.

    ``from_vocab`` initialises them from randomly chosen token embeddings (Lester et al.);
    otherwise ``N(0, 0.02²)``. Only the prompt trains.
    """
    _check_tokens(num_tokens)
    embed, blocks = _parts(model)
    table = embed.token.weight
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    init = None
    if from_vocab:
        rows = torch.randint(0, table.shape[0], (num_tokens,), generator=gen)
        init = table.detach()[rows.to(table.device)]
    prompt = SoftPrompt(num_tokens, table.shape[1], init=init, device=table.device,
                        dtype=table.dtype)
    embed.add_module(PROMPT, prompt)
    embed.register_forward_hook(_Prepend(prompt))
    hook = _BlockPrompt(prompt)
    for block in blocks:
        block.register_forward_pre_hook(hook.pre, with_kwargs=True)
    blocks[-1].register_forward_hook(hook.post, with_kwargs=True)
    _freeze_but(model, prompt)
    return prompt


def add_prefix_tuning(model: nn.Module, num_tokens: int, *, seed: int | None = None) -> nn.ModuleList:
    """Give every block's self-attention ``num_tokens`` learned key/value prefixes (in
    place); returns them (one :class:`PrefixKV` per block). Only the prefixes train."""
    _check_tokens(num_tokens)
    _, blocks = _parts(model)
    made = nn.ModuleList()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        for block in blocks:
            attn: Any = block.attn.fn
            ref = attn.q_proj.weight
            prefix = PrefixKV(num_tokens, attn.num_kv_heads, attn.head_dim, device=ref.device,
                              dtype=ref.dtype)
            block.add_module(PREFIX, prefix)
            block.register_forward_pre_hook(_BlockPrefix(prefix), with_kwargs=True)
            made.append(prefix)
    _freeze_but(model, made)
    return made


def prompt_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The soft-prompt and prefix parameters of ``model``."""
    return [p for m in model.modules() if isinstance(m, (SoftPrompt, PrefixKV))
            for p in m.parameters()]


def remove_prompts(model: nn.Module) -> nn.Module:
    """Remove every soft prompt and prefix (with their hooks); parameters train again."""
    ours = (_Prepend, _BlockPrompt, _BlockPrefix)
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key, hook in list(hooks.items()):
                owner = getattr(hook, "__self__", hook)
                if isinstance(owner, ours):
                    del hooks[key]
                    module._forward_hooks_with_kwargs.pop(key, None)
                    module._forward_pre_hooks_with_kwargs.pop(key, None)
        for attr in (PROMPT, PREFIX):
            if attr in module._modules:
                delattr(module, attr)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
