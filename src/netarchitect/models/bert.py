"""BERT-style bidirectional encoders (Devlin et al. 2019) with masked-LM and classification heads.

Token + position + segment embeddings, LayerNorm, then post-norm (or pre-norm)
:class:`~netarchitect.layers.transformer.TransformerBlock` s, and a tanh pooler over the
first token. Named sizes: ``bert-tiny``, ``bert-mini``, ``bert-small``, ``bert-medium``
(Turc et al. 2019), ``bert-base``, ``bert-large``; ``head=`` picks the model on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import SpecError
from ..layers._factory import LayerType, check_positive_int
from ..layers.activation import get_act_layer
from ..layers.embedding import LearnedPositionalEmbedding
from ..layers.norm import get_norm_layer
from ..layers.transformer import TransformerBlock
from ..registry import Example, register_model
from ._lm_base import check_token_ids, init_transformer_, norm_with_eps, padding_mask

__all__ = [
    "BERT_SIZES",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertModel",
    "BertOutput",
    "bert",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


@dataclass
class BertOutput:
    """Encoder outputs: every token's state (B, T, dim) and the pooled first token (B, dim)."""

    last_hidden_state: Tensor
    pooler_output: Tensor | None = None


class BertModel(nn.Module):
    """BERT encoder: ``blocks(drop(LN(tok + pos + segment)))`` and ``pooler = tanh(W h_0 + b)``.

    ``norm="post"`` is BERT's ``LN(x + f(x))``; ``"pre"`` adds a final norm.
    ``norm_eps`` (BERT: 1e-12) applies to every norm. ``type_vocab_size=0`` drops the
    segment embedding; ``pooler=False`` drops the pooler (then ``pooler_output`` is None).

    ``forward(input_ids, *, attention_mask=None, token_type_ids=None)``:
    ``attention_mask`` (B, T) is 1 for real tokens, 0 for padding; padded keys are
    ignored, so the states of real tokens do not depend on the padding.

    Shapes:
        input_ids: (B, T) -> last_hidden_state (B, T, dim), pooler_output (B, dim).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        depth: int,
        num_heads: int,
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
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("depth", depth)):
            check_positive_int(name, value)
        if norm not in ("post", "pre"):
            raise SpecError(f"norm={norm!r} must be 'post' or 'pre'", path="norm")
        factory = {"device": device, "dtype": dtype}
        norm_layer = norm_with_eps(norm_layer, norm_eps)
        make_norm = get_norm_layer(norm_layer)
        self.dim, self.depth, self.init_std = dim, depth, init_std
        self.grad_checkpointing = False
        self.tok_embed = nn.Embedding(vocab_size, dim, **factory)
        self.pos_embed = LearnedPositionalEmbedding(dim, max_positions=max_positions, **factory)
        self.type_embed = nn.Embedding(type_vocab_size, dim, **factory) if type_vocab_size else None
        self.embed_norm = make_norm(dim, **factory)
        self.drop = nn.Dropout(drop)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, num_heads, mlp_ratio=mlp_ratio, hidden_dim=hidden_dim, norm=norm,
                norm_layer=norm_layer, act_layer=act_layer, drop=drop, attn_drop=attn_drop,
                drop_path=drop_path * i / max(depth - 1, 1), **factory,
            )
            for i in range(depth)
        )
        self.norm = make_norm(dim, **factory) if norm == "pre" else nn.Identity()
        self.pooler = nn.Linear(dim, dim, **factory) if pooler else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_transformer_(self, std=self.init_std)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass."""
        self.grad_checkpointing = enable

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> BertOutput:
        check_token_ids(input_ids)
        B, T = input_ids.shape
        x = self.pos_embed(self.tok_embed(input_ids))
        if self.type_embed is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.type_embed(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given but the model has no segment embedding")
        x = self.drop(self.embed_norm(x))
        key_padding = padding_mask(attention_mask, B, T)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(
                    block, x, use_reentrant=False, key_padding_mask=key_padding
                )
            else:
                x = block(x, key_padding_mask=key_padding)
        x = self.norm(x)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return BertOutput(x, pooled)


class BertMLMHead(nn.Module):
    """Masked-LM head: ``decoder(LN(act(dense(h))))`` with the decoder tied to the token embedding.

    Shapes:
        (B, T, dim) -> (B, T, vocab_size).
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        *,
        act_layer: LayerType = "gelu",
        norm_layer: LayerType = "layernorm",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        vocab_size, dim = embedding.weight.shape
        factory = {"device": device, "dtype": dtype}
        self.dense = nn.Linear(dim, dim, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.norm = get_norm_layer(norm_layer)(dim, **factory)
        self.decoder = nn.Linear(dim, vocab_size, **factory)
        self.decoder.weight = embedding.weight

    def reset_parameters(self) -> None:
        self.dense.reset_parameters()
        self.norm.reset_parameters()
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.dense(x))))


class BertForMaskedLM(nn.Module):
    """BERT (no pooler) with the masked-LM head: logits over the vocabulary at every position.

    ``kwargs`` go to :class:`BertModel`. Shapes: input_ids (B, T) -> logits (B, T, vocab_size).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        act_layer: LayerType = "gelu",
        norm_layer: LayerType = "layernorm",
        norm_eps: float | None = 1e-12,
        init_std: float = 0.02,
        device: Device = None,
        dtype: Dtype = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.bert = BertModel(
            vocab_size, dim, act_layer=act_layer, norm_layer=norm_layer, norm_eps=norm_eps,
            init_std=init_std, pooler=False, **factory, **kwargs,
        )
        self.mlm_head = BertMLMHead(
            self.bert.tok_embed, act_layer=act_layer,
            norm_layer=norm_with_eps(norm_layer, norm_eps), **factory,
        )
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_transformer_(self, std=self.init_std)
        nn.init.zeros_(self.mlm_head.decoder.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.bert.set_grad_checkpointing(enable)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.mlm_head(out.last_hidden_state)


class BertForSequenceClassification(nn.Module):
    """BERT with a linear classifier on the pooled first token (``num_classes`` logits).

    ``forward_features`` returns the pooled (B, dim) features, ``forward_head`` the logits.
    ``kwargs`` go to :class:`BertModel`. Shapes: input_ids (B, T) -> logits (B, num_classes).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        num_classes: int = 2,
        classifier_drop: float = 0.0,
        init_std: float = 0.02,
        device: Device = None,
        dtype: Dtype = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        self.factory = {"device": device, "dtype": dtype}
        self.bert = BertModel(
            vocab_size, dim, init_std=init_std, pooler=True, **self.factory, **kwargs
        )
        self.num_features, self.num_classes, self.init_std = dim, num_classes, init_std
        self.feature_info = [{"num_chs": dim, "reduction": 1, "module": "bert"}]
        self.head_drop = nn.Dropout(classifier_drop)
        self.classifier = nn.Linear(dim, num_classes, **self.factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_transformer_(self, std=self.init_std)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.bert.set_grad_checkpointing(enable)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` classes."""
        check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes, **self.factory)
        nn.init.normal_(self.classifier.weight, std=self.init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, input_ids: Tensor, **kwargs: Any) -> Tensor:
        pooled = self.bert(input_ids, **kwargs).pooler_output
        assert pooled is not None  # built with pooler=True
        return pooled

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        x = self.forward_features(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return self.forward_head(x)


_HEADS = {None: BertModel, "mlm": BertForMaskedLM, "classification": BertForSequenceClassification}

#: BERT sizes (vocab 30522, 512 positions, 2 segments; MLP 4 x dim).
BERT_SIZES: dict[str, dict[str, int]] = {
    "bert-tiny": {"dim": 128, "depth": 2, "num_heads": 2},
    "bert-mini": {"dim": 256, "depth": 4, "num_heads": 4},
    "bert-small": {"dim": 512, "depth": 4, "num_heads": 8},
    "bert-medium": {"dim": 512, "depth": 8, "num_heads": 8},
    "bert-base": {"dim": 768, "depth": 12, "num_heads": 12},
    "bert-large": {"dim": 1024, "depth": 24, "num_heads": 16},
}


def bert(
    *,
    head: str | None = None,
    vocab_size: int = 30522,
    dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    **kwargs: Any,
) -> nn.Module:
    """A BERT encoder; ``head=None`` (:class:`BertModel`, with pooler), ``"mlm"``
    (:class:`BertForMaskedLM`) or ``"classification"`` (:class:`BertForSequenceClassification`,
    ``num_classes=``). ``kwargs`` go to the chosen class."""
    if head not in _HEADS:
        raise SpecError(f"head={head!r} must be one of {list(_HEADS)}", path="head")
    return _HEADS[head](vocab_size, dim, depth=depth, num_heads=num_heads, **kwargs)


def _example(head: str | None) -> Example:
    kwargs: dict[str, Any] = {
        "vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 16,
        "head": head,
    }
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return Example(kwargs, (ids,))


# The sweep's examples cover every head: none, masked-LM and classification.
_EXAMPLE_HEADS = {"bert-large": "mlm", "bert-tiny": "classification", "bert-small": "mlm"}


def _register(name: str, size: dict[str, int]) -> None:
    def build(**overrides: Any) -> nn.Module:
        return bert(**{**size, **overrides})

    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"BERT ``{name}``: {size} (see :func:`bert`)."
    head = _EXAMPLE_HEADS.get(name)
    register_model(name, example=lambda: _example(head))(build)


for _name, _size in BERT_SIZES.items():
    _register(_name, _size)
