"""BERT-style bidirectional encoders (Devlin et al. 2019) with masked-LM and classification heads.

The spec: ``embed`` (token + position + segment embeddings, LayerNorm, dropout), then
post-norm (or pre-norm, with a final ``norm``) ``transformer_block`` s and, by ``head``:

- ``None``: the encoder, with the tanh ``pooler`` over the first token; ``forward``
  returns :class:`BertOutput` (``kind: bert``);
- ``"mlm"``: the masked-LM head ``mlm_head(LN(act(mlm_dense(h))))``, its decoder tied to
  the token table; ``forward`` returns logits at every position (``kind: encoder``);
- ``"classification"``: a :class:`~netarchitect.models._classifier.ClassifierNetwork`
  whose head is pool-first-token → pooler → tanh → dropout → linear (``kind: classifier``).

Context: ``attention_mask`` (1 = token, 0 = padding), ``token_type_ids``, ``position_ids``.
Named sizes: ``bert-tiny``, ``bert-mini``, ``bert-small``, ``bert-medium`` (Turc et al.
2019), ``bert-base``, ``bert-large``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import SpecError
from ..layers._factory import LayerType, check_choice, check_positive_int, check_probability
from ..registry import Example, register_network_kind
from ._graph_builder import GraphBuilder
from ._lm_base import SequenceEncoder, compact_params, layer_params, transformer_init
from ._variants import register_sizes
from .decoder import probe_length

__all__ = ["BERT_SIZES", "BertEncoder", "BertOutput", "bert"]

HEADS = (None, "mlm", "classification")


@dataclass
class BertOutput:
    """Encoder outputs: every token's state (B, T, dim) and the pooled first token (B, dim)."""

    last_hidden_state: Tensor
    pooler_output: Tensor | None = None


@register_network_kind("bert")
class BertEncoder(SequenceEncoder):
    """The BERT encoder (``kind: bert``): ``forward`` returns :class:`BertOutput`.

    ``pooler_output`` is ``tanh(W h_0 + b)`` of the first token (``None`` without the
    pooler). Shapes: input_ids (B, T) -> last_hidden_state (B, T, dim), pooler (B, dim).
    """

    _ROLES = ("embedding", "features", "head", "pooler")

    @property
    def pooler(self) -> Any:
        """The pooler's linear layer (``None`` without a pooler)."""
        return self._node("pooler")

    def forward(self, *args: Any, return_nodes: Sequence[str] | None = None, **kwargs: Any) -> Any:
        out = super().forward(*args, return_nodes=return_nodes, **kwargs)
        if return_nodes is not None:
            return out
        return BertOutput(*out) if isinstance(out, tuple) else BertOutput(out)


def bert(
    *,
    head: str | None = None,
    vocab_size: int = 30522,
    dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    hidden_dim: int | None = None,
    max_positions: int = 512,
    type_vocab_size: int = 2,
    norm: str = "post",
    norm_layer: LayerType = "layernorm",
    norm_eps: float | None = 1e-12,
    act_layer: LayerType = "gelu",
    pooler: bool = True,
    drop: float = 0.0,
    attn_drop: float = 0.0,
    drop_path: float = 0.0,
    init_std: float = 0.02,
    num_classes: int = 2,
    classifier_drop: float = 0.0,
    seq_len: int | None = None,
    name: str = "bert",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> Any:
    """A BERT encoder; ``head`` picks the model on top (see the module docstring).

    ``norm="post"`` is BERT's ``LN(x + f(x))``; ``"pre"`` adds a final norm. ``norm_eps``
    (BERT: 1e-12) applies to every norm; ``type_vocab_size=0`` drops the segment
    embedding; ``pooler=False`` drops the pooler of the bare encoder. ``num_classes`` and
    ``classifier_drop`` are the classification head's.
    """
    if head not in HEADS:
        raise SpecError(f"head={head!r} must be one of {list(HEADS)}", path="head")
    for key, value in (("vocab_size", vocab_size), ("dim", dim), ("depth", depth)):
        check_positive_int(key, value)
    check_choice("norm", norm, ("post", "pre"))
    check_probability("classifier_drop", classifier_drop)
    norm_spec = layer_params(norm_layer, eps=norm_eps)
    b = GraphBuilder(name, {"input_ids": ((probe_length(max_positions, seq_len),), "int64")})
    embed = {
        "vocab_size": vocab_size, "dim": dim, "pos": "learned", "max_positions": max_positions,
        "type_vocab_size": type_vocab_size, "norm_layer": norm_spec, "drop": drop,
        "init_std": init_std,
    }
    b.add("embed", "token_embedding", compact_params("token_embedding", embed),
          context=["position_ids", "token_type_ids"])
    blocks = []
    for i in range(depth):
        params = {
            "num_heads": num_heads, "mlp_ratio": mlp_ratio, "hidden_dim": hidden_dim,
            "norm": norm, "norm_layer": norm_spec, "act_layer": act_layer, "drop": drop,
            "attn_drop": attn_drop, "drop_path": drop_path * i / max(depth - 1, 1),
        }
        blocks.append(b.add(f"block_{i}", "transformer_block",
                            compact_params("transformer_block", params),
                            context=["attention_mask"]))
    if norm == "pre":
        b.add_layer("norm", norm_spec)
    features = b.last
    roles: dict[str, Any] = {"embedding": "embed", "blocks": blocks, "features": features}
    outputs = None
    if head == "mlm":
        b.add("mlm_dense", "linear", {"out_features": dim})
        b.add_layer("mlm_act", act_layer)
        b.add_layer("mlm_norm", norm_spec)
        b.add("mlm_head", "lm_head", {"out_features": vocab_size, "bias": True})
        b.tie["mlm_head.weight"] = "embed.token.weight"
        roles.update(kind="encoder", head="mlm_head")
    elif head == "classification":
        check_positive_int("num_classes", num_classes)
        _add_pooler(b, dim)
        if classifier_drop:
            b.add("head_drop", "dropout", {"p": classifier_drop})
        b.add("head", "linear", {"out_features": num_classes})
        roles = {"kind": "classifier", "features": features, "stages": blocks}
    else:
        roles.update(kind="bert")
        if pooler:
            _add_pooler(b, dim)
            roles["pooler"] = "pooler"
            outputs = [features, b.last]
    spec = b.make_spec(roles, outputs=outputs, init=transformer_init(init_std))
    return GraphBuilder.build_spec(spec, device=device, dtype=dtype, seed=seed)


def _add_pooler(b: GraphBuilder, dim: int) -> None:
    """``pooler_act(pooler(first token))``: BERT's tanh pooler."""
    b.add("head_pool", "token_pool", {"pool_type": "cls"})
    b.add("pooler", "linear", {"out_features": dim})
    b.add("pooler_act", "tanh")


#: BERT sizes (vocab 30522, 512 positions, 2 segments; MLP 4 x dim).
BERT_SIZES: dict[str, dict[str, int]] = {
    "bert-tiny": {"dim": 128, "depth": 2, "num_heads": 2},
    "bert-mini": {"dim": 256, "depth": 4, "num_heads": 4},
    "bert-small": {"dim": 512, "depth": 4, "num_heads": 8},
    "bert-medium": {"dim": 512, "depth": 8, "num_heads": 8},
    "bert-base": {"dim": 768, "depth": 12, "num_heads": 12},
    "bert-large": {"dim": 1024, "depth": 24, "num_heads": 16},
}


def _example(head: str | None) -> Example:
    kwargs: dict[str, Any] = {
        "vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 16,
        "head": head,
    }
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return Example(kwargs, (ids,))


# The sweep's examples cover every head: none, masked-LM and classification.
_EXAMPLE_HEADS = {"bert-large": "mlm", "bert-tiny": "classification", "bert-small": "mlm"}

register_sizes(
    bert,
    BERT_SIZES,
    example={n: functools.partial(_example, _EXAMPLE_HEADS.get(n)) for n in BERT_SIZES},
    describe="BERT",
)
