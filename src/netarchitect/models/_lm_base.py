"""Token models as spec-built networks: the network kinds and the shared spec pieces.

Every sequence family (GPT-2, LLaMA, MoE, BERT, encoder-decoder, Conformer, Perceiver)
is a :class:`~netarchitect.network.Network` built from a spec of coarse nodes — an
embedding, Transformer blocks, a norm, a head — whose per-call values (attention mask,
position ids, key/value cache, ``logits_to_keep``) are the spec's *context*. The
classes here only add named access to the roles and a few conveniences; ``build``
returns them from a spec with ``roles``:

- :class:`SequenceEncoder` (``kind: encoder``): ``forward_features`` and the roles;
- :class:`CausalLM` (``kind: causal_lm``): a decoder-only language model;
- :class:`MoECausalLM` (``kind: moe_causal_lm``): also returns the load-balancing loss.

Masks follow the Hugging Face convention at the model level (``attention_mask``: 1 = real
token, 0 = padding).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import Problem, SpecError, suggest
from ..layers._factory import LayerType
from ..layers.moe import moe_aux_loss
from ..network import Network
from ..registry import get_block, register_network_kind
from ..spec import NetworkSpec

__all__ = [
    "CausalLM",
    "MoECausalLM",
    "MoELMOutput",
    "SequenceEncoder",
    "compact_params",
    "layer_params",
    "per_layer",
    "transformer_init",
]

_RESIDUAL_PROJECTIONS = ("*.out_proj", "*.fc2", "*.down_proj")


def transformer_init(std: float = 0.02, residual_std: float | None = None) -> list[dict[str, Any]]:
    """GPT-2/BERT initialisation as spec ``init`` rules: linear and embedding weights
    ``N(0, std)``, biases zero; residual output projections (``out_proj``, ``fc2``,
    ``down_proj``) ``N(0, residual_std)`` when given (GPT-2: ``std / sqrt(2 · depth)``)."""
    rules: list[dict[str, Any]] = []
    if residual_std:
        rules.append({
            "init": "normal", "modules": ["Linear"], "names": list(_RESIDUAL_PROJECTIONS),
            "args": {"std": residual_std},
        })
    rules += [
        {"init": "normal", "modules": ["Linear", "lm_head", "Embedding", "learned_pos_embed"],
         "args": {"std": std}},
        {"init": "zeros", "modules": ["Linear", "lm_head"], "params": ["bias"]},
    ]
    return rules


def per_layer(value: Any, depth: int, name: str) -> list[Any]:
    """``value`` repeated ``depth`` times, or ``value`` itself if it is a list of ``depth``."""
    if not isinstance(value, (list, tuple)):
        return [value] * depth
    if len(value) != depth:
        raise SpecError(f"{name} has {len(value)} entries for depth={depth}", path=name)
    return list(value)


def layer_params(layer: LayerType, **extra: Any) -> LayerType:
    """A layer type as spec data with ``extra`` constructor arguments (``None`` ones left out):
    ``layer_params("layernorm", eps=1e-5)`` -> ``{"name": "layernorm", "eps": 1e-5}``."""
    extra = {k: v for k, v in extra.items() if v is not None}
    if not extra:
        return layer
    if isinstance(layer, str):
        return {"name": layer, **extra}
    if isinstance(layer, Mapping):
        return {**layer, **extra}
    raise SpecError(
        f"a layer type given as {type(layer).__name__} cannot go in a spec; use its name",
        path="layer",
    )


def compact_params(block: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the entries equal to ``block``'s constructor defaults (tidy specs)."""
    signature = inspect.signature(get_block(block).__init__).parameters
    out = {}
    for key, value in params.items():
        default = signature[key].default if key in signature else inspect.Parameter.empty
        if default is inspect.Parameter.empty or value != default or type(value) is not type(default):
            out[key] = value
    return out


def _node_problems(spec: NetworkSpec, names: Sequence[tuple[str, Any]]) -> list[Problem]:
    ids = {n.id for n in spec.nodes}
    return [
        Problem(path, f"unknown node {name!r}{suggest(str(name), ids)}")
        for path, name in names
        if name is not None and name not in ids
    ]


class _RoleAccess:
    """Named access to the nodes a spec's roles name (mixed into the network kinds)."""

    _ROLES: tuple[str, ...] = ()
    _LIST_ROLES: tuple[str, ...] = ()

    @classmethod
    def check_roles(cls, spec: NetworkSpec) -> list[Problem]:
        """Every role names a node of ``spec``."""
        roles = spec.roles
        named = [(f"roles.{r}", roles.get(r)) for r in cls._ROLES]
        for r in cls._LIST_ROLES:
            named += [(f"roles.{r}[{i}]", n) for i, n in enumerate(roles.get(r, ()))]
        return _node_problems(spec, named)

    def _role(self, name: str) -> Any:
        return self.spec.roles.get(name)  # type: ignore[attr-defined]

    def _node(self, name: str) -> nn.Module | None:
        node = self._role(name)
        return None if node is None else self.nodes[node]  # type: ignore[attr-defined]


class _SequenceNetwork(_RoleAccess, Network):
    """A token network with roles ``embedding``, ``blocks``, ``features`` and ``head``."""

    _ROLES = ("embedding", "features", "head")
    _LIST_ROLES = ("blocks",)

    @property
    def embedding(self) -> nn.Module | None:
        """The input embedding node (a ``token_embedding`` for token models)."""
        return self._node("embedding")

    @property
    def tok_embed(self) -> nn.Embedding:
        """The token table of the embedding."""
        return self.embedding.token  # type: ignore[union-attr,return-value]

    @property
    def pos_embed(self) -> nn.Module | None:
        """The absolute position code of the embedding (``None`` for RoPE, ALiBi, ...)."""
        return getattr(self.embedding, "pos", None)

    @property
    def blocks(self) -> list[nn.Module]:
        """The Transformer blocks, in order."""
        return [self.nodes[n] for n in self._role("blocks") or ()]

    @property
    def depth(self) -> int:
        return len(self._role("blocks") or ())

    @property
    def norm(self) -> nn.Module | None:
        """The node :meth:`forward_features` returns (the final norm)."""
        return self._node("features")

    @property
    def head(self) -> nn.Module | None:
        """The output head (``None`` for an encoder without one)."""
        return self._node("head")

    @property
    def dim(self) -> int:
        return self._infos[self._role("features")].shape[-1]

    def checkpoint_nodes(self) -> frozenset[str]:
        """Gradient checkpointing recomputes the Transformer blocks."""
        return frozenset(self._role("blocks") or ())

    def forward_features(self, *inputs: Tensor, **context: Any) -> Tensor:
        """The ``features`` node's output (the final hidden states, before the head)."""
        features = self._role("features")
        return self(*inputs, return_nodes=[features], **context)[features]


@register_network_kind("encoder")
class SequenceEncoder(_SequenceNetwork):
    """A spec-built sequence encoder (``kind: encoder``): BERT's masked LM, Conformer,
    Perceiver; ``forward`` returns the spec's outputs, ``forward_features`` the features."""


@register_network_kind("causal_lm")
class CausalLM(_SequenceNetwork):
    """A spec-built decoder-only language model (``kind: causal_lm``): GPT-2, LLaMA.

    ``forward(input_ids, *, attention_mask=None, position_ids=None, kv_cache=None,
    logits_to_keep=None)`` returns logits (B, T, vocab_size). ``attention_mask`` (B,
    cached + T) is 1 for real tokens and 0 for padding (left or right); ``kv_cache`` is a
    :class:`~netarchitect.layers.kv_cache.ModelCache` from :meth:`new_cache`, extended in
    place, so feeding a sequence in pieces gives the logits of the whole; ``position_ids``
    (absolute positions only) default to the count of real tokens before each token;
    ``logits_to_keep=n`` returns the logits of the last ``n`` positions only (decoding).

    Shapes:
        input_ids: (B, T) int64 -> logits: (B, T, vocab_size).
    """

    @property
    def vocab_size(self) -> int:
        return self.tok_embed.num_embeddings

    @property
    def max_positions(self) -> int:
        """The context length (the embedding's ``max_positions``)."""
        return self.embedding.max_positions  # type: ignore[union-attr,return-value]

    @property
    def pos(self) -> str | None:
        """The position scheme: the embedding's (``"learned"``, ``"sinusoidal"``) or the
        attention's (``"rope"``, ``"alibi"``, ``"relative"``)."""
        pos = self.embedding.pos_type  # type: ignore[union-attr]
        if pos is None and self.blocks:
            pos = self.blocks[0].attn.fn.pos
        return pos

    @property
    def tie_embeddings(self) -> bool:
        """Whether the head shares the token embedding's weight."""
        return self.head is not None and self.head.weight is self.tok_embed.weight

    @property
    def drop(self) -> nn.Dropout:
        """The embedding dropout."""
        return self.embedding.drop  # type: ignore[union-attr,return-value]

    def extra_repr(self) -> str:
        return (
            f"spec={self.spec.name!r}, vocab_size={self.vocab_size}, dim={self.dim}, "
            f"depth={self.depth}, pos={self.pos!r}, tie_embeddings={self.tie_embeddings}"
        )


@dataclass
class MoELMOutput:
    """Logits (B, T, V) and the load-balancing loss (0-dim), summed over the MoE layers."""

    logits: Tensor
    aux_loss: Tensor


@register_network_kind("moe_causal_lm")
class MoECausalLM(CausalLM):
    """A :class:`CausalLM` with mixture-of-experts feed-forwards whose ``forward`` returns
    :class:`MoELMOutput`: the logits and :func:`~netarchitect.layers.moe.moe_aux_loss` (the
    sum over MoE layers of ``aux_loss_weight · E · Σ_e f_e P_e``) to add to the loss."""

    def forward(self, *args: Any, return_nodes: Sequence[str] | None = None, **kwargs: Any) -> Any:
        out = super().forward(*args, return_nodes=return_nodes, **kwargs)
        if return_nodes is not None:
            return out
        return MoELMOutput(out, moe_aux_loss(self).to(out.device))
