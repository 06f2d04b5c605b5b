"""Hugging Face ``transformers`` <-> netarchitect conversion for GPT-2, BERT and LLaMA.

``from_hf(hf_model)`` builds the matching netarchitect model from the model's config and
copies its weights; ``to_hf(model)`` does the reverse. Converted models compute the same
outputs (float32 logits agree to ~1e-6). Supported:

=======================================  ==================================================
transformers                             netarchitect (spec-built)
=======================================  ==================================================
``GPT2LMHeadModel`` / ``GPT2Model``      :class:`CausalLM` from :func:`gpt`
``LlamaForCausalLM`` / ``LlamaModel``    :class:`CausalLM` from :func:`llama`
``BertModel``                            :class:`BertEncoder` from :func:`bert`
``BertForMaskedLM``                      ``bert(head="mlm")`` (a :class:`SequenceEncoder`)
``BertForSequenceClassification``        ``bert(head="classification")`` (a classifier)
=======================================  ==================================================

Weights map through one table of key pairs per family (:class:`Rule`): GPT-2's
``Conv1D`` weights are transposed and its fused ``c_attn`` is split into q/k/v; LLaMA and
BERT names map one to one onto our nodes (``embed``, ``block_i``, ``norm``, ``head``,
...). From a base model (``GPT2Model``, ``LlamaModel``) the LM head of an untied model
keeps its initial weights. ``transformers`` (extra ``hf``) is imported
only here, when a conversion runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.activation import GELU, GELUTanh, ReLU, SiLU
from ..layers.mlp import MLP, GatedMLP
from ..layers.positional import ROPE_SCALING_KEYS
from ..models._classifier import ClassifierNetwork
from ..models._lm_base import CausalLM, MoECausalLM, SequenceEncoder
from ..models.bert import BertEncoder, bert
from ..models.gpt import gpt
from ..models.llama import llama
from .hf_vision import from_hf_vision, is_hf_vision

__all__ = ["Rule", "from_hf", "to_hf"]

#: transformers class name -> (family, kind).
_HF_CLASSES = {
    "GPT2LMHeadModel": ("gpt2", "lm"),
    "GPT2Model": ("gpt2", "base"),
    "LlamaForCausalLM": ("llama", "lm"),
    "LlamaModel": ("llama", "base"),
    "BertForMaskedLM": ("bert", "mlm"),
    "BertForSequenceClassification": ("bert", "cls"),
    "BertModel": ("bert", "base"),
}
_CLASS_OF = {v: k for k, v in _HF_CLASSES.items()}
_HF_PREFIX = {("gpt2", "lm"): "transformer.", ("llama", "lm"): "model."}
_ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the hf extra is installed in CI
        raise ImportError(
            "Hugging Face interop needs transformers: pip install 'netarchitect[hf]'"
        ) from err
    return transformers


@dataclass(frozen=True)
class Rule:
    """One transformers tensor ``hf`` <-> our tensors ``ours`` (several: concatenated on dim 0
    after transposing when ``transpose``, as GPT-2's fused ``c_attn``)."""

    hf: str
    ours: tuple[str, ...]
    transpose: bool = False


def _linear(hf: str, ours: str, *, bias: bool = True, transpose: bool = False) -> list[Rule]:
    rules = [Rule(f"{hf}.weight", (f"{ours}.weight",), transpose)]
    return rules + [Rule(f"{hf}.bias", (f"{ours}.bias",))] if bias else rules


def _get(state: dict[str, Tensor], key: str, side: str) -> Tensor:
    try:
        return state[key]
    except KeyError:
        raise ValueError(f"{side} weights have no {key!r}: the models do not match") from None


def convert_state(state: dict[str, Tensor], rules: list[Rule], *, to: str) -> dict[str, Tensor]:
    """Apply ``rules`` to a state dict, ``to="ours"`` (from transformers) or ``to="hf"``."""
    out: dict[str, Tensor] = {}
    for rule in rules:
        if to == "ours":
            t = _get(state, rule.hf, "transformers")
            t = t.t() if rule.transpose else t
            for key, part in zip(rule.ours, t.chunk(len(rule.ours), dim=0)):
                out[key] = part.contiguous()
        else:
            parts = [_get(state, key, "netarchitect") for key in rule.ours]
            t = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
            out[rule.hf] = (t.t() if rule.transpose else t).contiguous()
    return out


# --- GPT-2 -------------------------------------------------------------------------------


def _blocks(model: nn.Module) -> list[str]:
    """Our Transformer block nodes, in order."""
    spec = model.spec  # type: ignore[attr-defined]
    return [n.id for n in spec.nodes if n.block == "transformer_block"]


def _gpt2_rules(model: CausalLM, prefix: str, head: bool) -> list[Rule]:
    p = prefix
    rules = [
        Rule(f"{p}wte.weight", ("nodes.embed.token.weight",)),
        Rule(f"{p}wpe.weight", ("nodes.embed.pos.weight",)),
        *_linear(f"{p}ln_f", "nodes.norm"),
    ]
    for i, node in enumerate(_blocks(model)):
        h, b = f"{p}h.{i}.", f"nodes.{node}."
        rules += _linear(f"{h}ln_1", f"{b}attn.norm")
        for kind in ("weight", "bias"):
            qkv = tuple(f"{b}attn.fn.{x}_proj.{kind}" for x in "qkv")
            rules.append(Rule(f"{h}attn.c_attn.{kind}", qkv, transpose=kind == "weight"))
        rules += _linear(f"{h}attn.c_proj", f"{b}attn.fn.out_proj", transpose=True)
        rules += _linear(f"{h}ln_2", f"{b}mlp.norm")
        rules += _linear(f"{h}mlp.c_fc", f"{b}mlp.fn.fc1", transpose=True)
        rules += _linear(f"{h}mlp.c_proj", f"{b}mlp.fn.fc2", transpose=True)
    return rules + [Rule("lm_head.weight", ("nodes.head.weight",))] if head else rules


def _gpt2_from_config(config: Any, factory: dict[str, Any]) -> CausalLM:
    if not config.scale_attn_weights or config.scale_attn_by_inverse_layer_idx:
        raise ValueError("GPT-2 attention must use the plain 1/sqrt(head_dim) scale")
    if getattr(config, "add_cross_attention", False):
        raise ValueError("GPT-2 with cross-attention is not supported")
    return gpt(
        vocab_size=config.vocab_size,
        dim=config.n_embd,
        depth=config.n_layer,
        num_heads=config.n_head,
        max_positions=config.n_positions,
        hidden_dim=config.n_inner or 4 * config.n_embd,
        act_layer=_act_from_hf(config.activation_function),
        norm_eps=config.layer_norm_epsilon,
        drop=config.resid_pdrop,
        attn_drop=config.attn_pdrop,
        tie_embeddings=config.tie_word_embeddings,
        **factory,
    )


def _gpt2_config(model: CausalLM) -> dict[str, Any]:
    attn, mlp = _decoder_parts(model, "learned", MLP)
    if attn.q_proj.bias is None:
        raise ValueError("GPT-2 has attention biases: build with bias=True")
    if attn.num_kv_heads != attn.num_heads or attn.head_dim * attn.num_heads != model.dim:
        raise ValueError("GPT-2 has num_heads * head_dim == dim and no grouped-query attention")
    tokens = {} if model.vocab_size > 50256 else {"bos_token_id": None, "eos_token_id": None}
    return dict(
        vocab_size=model.vocab_size,
        n_positions=model.max_positions,
        n_embd=model.dim,
        n_layer=model.depth,
        n_head=attn.num_heads,
        n_inner=mlp.fc1.out_features,
        activation_function=_act_to_hf(mlp.act, gelu_tanh="gelu_new"),
        layer_norm_epsilon=model.norm.eps,
        resid_pdrop=model.drop.p,
        embd_pdrop=model.drop.p,
        attn_pdrop=attn.attn_drop,
        tie_word_embeddings=model.tie_embeddings,
        **tokens,
    )


# --- LLaMA -------------------------------------------------------------------------------


def _llama_rules(model: CausalLM, prefix: str, head: bool) -> list[Rule]:
    p = prefix
    attn_bias = model.blocks[0].attn.fn.q_proj.bias is not None
    mlp_bias = model.blocks[0].mlp.fn.gate_proj.bias is not None
    rules = [
        Rule(f"{p}embed_tokens.weight", ("nodes.embed.token.weight",)),
        Rule(f"{p}norm.weight", ("nodes.norm.weight",)),
    ]
    for i, node in enumerate(_blocks(model)):
        h, b = f"{p}layers.{i}.", f"nodes.{node}."
        rules.append(Rule(f"{h}input_layernorm.weight", (f"{b}attn.norm.weight",)))
        for x in ("q", "k", "v"):
            rules += _linear(f"{h}self_attn.{x}_proj", f"{b}attn.fn.{x}_proj", bias=attn_bias)
        rules += _linear(f"{h}self_attn.o_proj", f"{b}attn.fn.out_proj", bias=attn_bias)
        rules.append(Rule(f"{h}post_attention_layernorm.weight", (f"{b}mlp.norm.weight",)))
        for x in ("gate", "up", "down"):
            rules += _linear(f"{h}mlp.{x}_proj", f"{b}mlp.fn.{x}_proj", bias=mlp_bias)
    return rules + [Rule("lm_head.weight", ("nodes.head.weight",))] if head else rules


#: Our RoPE scaling keys whose transformers ``rope_parameters`` names differ.
_ROPE_KEY_TO_HF = {
    "type": "rope_type",
    "original_max_positions": "original_max_position_embeddings",
}


def _rope_scaling_from_hf(rope: dict[str, Any]) -> dict[str, Any] | None:
    """Our ``rope_scaling`` for transformers ``rope_parameters`` (``None``: plain RoPE)."""
    kind = rope.get("rope_type", "default")
    if kind == "default":
        return None
    if kind not in ROPE_SCALING_KEYS:
        raise ValueError(
            f"LLaMA rope_type {kind!r} is not supported (only 'default', "
            f"{', '.join(repr(k) for k in ROPE_SCALING_KEYS)})"
        )
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("LLaMA RoPE with partial_rotary_factor != 1 is not supported")
    keys = ("type", *ROPE_SCALING_KEYS[kind])
    return {key: rope.get(_ROPE_KEY_TO_HF.get(key, key)) for key in keys}


def _rope_parameters_to_hf(base: float, scaling: dict[str, Any] | None) -> dict[str, Any]:
    """transformers ``rope_parameters`` for RoPE with ``base`` and our ``scaling``."""
    hf_scaling = {_ROPE_KEY_TO_HF.get(k, k): v for k, v in (scaling or {}).items()}
    return {"rope_type": "default", "rope_theta": base, **hf_scaling}


def _llama_from_config(config: Any, factory: dict[str, Any]) -> CausalLM:
    rope = dict(config.rope_parameters or {})
    rope_scaling = _rope_scaling_from_hf(rope)
    if config.hidden_act not in ("silu", "swish"):
        raise ValueError(f"LLaMA hidden_act {config.hidden_act!r} is not supported (only 'silu')")
    return llama(
        vocab_size=config.vocab_size,
        dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_dim=config.intermediate_size,
        max_positions=config.max_position_embeddings,
        rope_base=rope.get("rope_theta", 10000.0),
        rope_scaling=rope_scaling,
        norm_eps=config.rms_norm_eps,
        tie_embeddings=config.tie_word_embeddings,
        bias=config.attention_bias,
        mlp_bias=config.mlp_bias,
        attn_drop=config.attention_dropout,
        **factory,
    )


def _llama_config(model: CausalLM) -> dict[str, Any]:
    attn, mlp = _decoder_parts(model, "rope", GatedMLP)
    if not isinstance(mlp.act, SiLU):
        raise TypeError(f"LLaMA's MLP is SwiGLU: got activation {type(mlp.act).__name__}")
    assert attn.rotary is not None
    return {
        "vocab_size": model.vocab_size,
        "hidden_size": model.dim,
        "intermediate_size": mlp.gate_proj.out_features,
        "num_hidden_layers": model.depth,
        "num_attention_heads": attn.num_heads,
        "num_key_value_heads": attn.num_kv_heads,
        "head_dim": attn.head_dim,
        "max_position_embeddings": model.max_positions,
        "rms_norm_eps": model.norm.eps,
        "rope_parameters": _rope_parameters_to_hf(attn.rotary.base, attn.rotary.scaling),
        "tie_word_embeddings": model.tie_embeddings,
        "attention_bias": attn.q_proj.bias is not None,
        "mlp_bias": mlp.gate_proj.bias is not None,
        "attention_dropout": attn.attn_drop,
        "hidden_act": "silu",
    }


def _decoder_parts(model: CausalLM, pos: str, mlp_type: type[nn.Module]) -> tuple[Any, Any]:
    """Block 0's attention and MLP, after checking the model has the family's structure."""
    family = "GPT-2" if pos == "learned" else "LLaMA"
    if model.pos != pos:
        raise ValueError(f"{family} needs pos={pos!r}, the model has pos={model.pos!r}")
    attn, mlp = model.blocks[0].attn.fn, model.blocks[0].mlp.fn
    if not isinstance(mlp, mlp_type):
        raise TypeError(
            f"{family} needs {mlp_type.__name__} feed-forwards, got {type(mlp).__name__}"
        )
    if attn.window is not None or not isinstance(attn.q_norm, nn.Identity):
        raise ValueError(f"{family} has no attention window and no qk-norm")
    return attn, mlp


# --- BERT --------------------------------------------------------------------------------


def _bert_rules(model: nn.Module, kind: str) -> list[Rule]:
    """Rules between our BERT network and transformers' ``kind`` (base, mlm, cls) model."""
    nodes = model.nodes  # type: ignore[attr-defined]
    p = "" if kind == "base" else "bert."
    e = f"{p}embeddings."
    rules = [
        Rule(f"{e}word_embeddings.weight", ("nodes.embed.token.weight",)),
        Rule(f"{e}position_embeddings.weight", ("nodes.embed.pos.weight",)),
        Rule(f"{e}token_type_embeddings.weight", ("nodes.embed.segment.weight",)),
        *_linear(f"{e}LayerNorm", "nodes.embed.norm"),
    ]
    for i, node in enumerate(_blocks(model)):
        h, b = f"{p}encoder.layer.{i}.", f"nodes.{node}."
        for hf, ours in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            rules += _linear(f"{h}attention.self.{hf}", f"{b}attn.fn.{ours}")
        rules += _linear(f"{h}attention.output.dense", f"{b}attn.fn.out_proj")
        rules += _linear(f"{h}attention.output.LayerNorm", f"{b}attn.norm")
        rules += _linear(f"{h}intermediate.dense", f"{b}mlp.fn.fc1")
        rules += _linear(f"{h}output.dense", f"{b}mlp.fn.fc2")
        rules += _linear(f"{h}output.LayerNorm", f"{b}mlp.norm")
    if "pooler" in nodes and kind != "mlm":
        rules += _linear(f"{p}pooler.dense", "nodes.pooler")
    if kind == "mlm":
        c = "cls.predictions."
        rules += _linear(f"{c}transform.dense", "nodes.mlm_dense")
        rules += _linear(f"{c}transform.LayerNorm", "nodes.mlm_norm")
        rules += _linear(f"{c}decoder", "nodes.mlm_head")
        rules.append(Rule(f"{c}bias", ("nodes.mlm_head.bias",)))
    elif kind == "cls":
        rules += _linear("classifier", "nodes.head")
    return rules


def _bert_from_config(config: Any, kind: str, pooler: bool, factory: dict[str, Any]) -> nn.Module:
    if config.is_decoder or config.add_cross_attention:
        raise ValueError("only bidirectional BERT encoders (is_decoder=False) are supported")
    head_kwargs: dict[str, Any] = {"base": {"pooler": pooler}, "mlm": {}}.get(kind, {})
    if kind == "cls":
        drop = config.classifier_dropout
        head_kwargs = {
            "num_classes": config.num_labels,
            "classifier_drop": config.hidden_dropout_prob if drop is None else drop,
        }
    return bert(
        head={"base": None, "mlm": "mlm", "cls": "classification"}[kind],
        vocab_size=config.vocab_size,
        dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        hidden_dim=config.intermediate_size,
        max_positions=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        norm_eps=config.layer_norm_eps,
        act_layer=_act_from_hf(config.hidden_act),
        drop=config.hidden_dropout_prob,
        attn_drop=config.attention_probs_dropout_prob,
        **head_kwargs,
        **factory,
    )


def _bert_kind(model: nn.Module) -> str | None:
    """``base``, ``mlm`` or ``cls`` for our BERT networks; ``None`` for anything else."""
    nodes = getattr(model, "nodes", {})
    if "embed" not in nodes or getattr(nodes["embed"], "segment", None) is None:
        return None
    if isinstance(model, BertEncoder):
        return "base"
    if isinstance(model, SequenceEncoder) and "mlm_head" in nodes:
        return "mlm"
    if isinstance(model, ClassifierNetwork) and "pooler" in nodes:
        return "cls"
    return None


def _bert_config(model: nn.Module, kind: str) -> dict[str, Any]:
    nodes = model.nodes  # type: ignore[attr-defined]
    embed, block = nodes["embed"], nodes[_blocks(model)[0]]
    if block.attn.mode != "post":
        raise ValueError("transformers BERT is post-norm with a segment embedding")
    extra: dict[str, Any] = {}
    if kind == "cls":
        drop = nodes["head_drop"].p if "head_drop" in nodes else 0.0
        extra = {"num_labels": model.num_classes, "classifier_dropout": drop}
    return dict(
        vocab_size=embed.vocab_size,
        hidden_size=embed.dim,
        num_hidden_layers=len(_blocks(model)),
        num_attention_heads=block.attn.fn.num_heads,
        intermediate_size=block.mlp.fn.fc1.out_features,
        hidden_act=_act_to_hf(block.mlp.fn.act, gelu_tanh="gelu_pytorch_tanh"),
        hidden_dropout_prob=embed.drop.p,
        attention_probs_dropout_prob=block.attn.fn.attn_drop,
        max_position_embeddings=embed.max_positions,
        type_vocab_size=embed.segment.num_embeddings,
        layer_norm_eps=embed.norm.eps,
        **extra,
    )


# --- shared ------------------------------------------------------------------------------


def _act_from_hf(name: str) -> str:
    if name not in _ACT_FROM_HF:
        raise ValueError(f"activation {name!r} is not supported; known: {sorted(_ACT_FROM_HF)}")
    return _ACT_FROM_HF[name]


def _act_to_hf(act: nn.Module, *, gelu_tanh: str) -> str:
    if isinstance(act, GELUTanh) or (isinstance(act, GELU) and act.approximate == "tanh"):
        return gelu_tanh
    for cls, name in ((GELU, "gelu"), (ReLU, "relu"), (SiLU, "silu")):
        if isinstance(act, cls):
            return name
    raise ValueError(f"activation {type(act).__name__} has no transformers name")


def _family_of(hf_model: nn.Module) -> tuple[str, str]:
    for cls in type(hf_model).__mro__:
        if cls.__name__ in _HF_CLASSES:
            return _HF_CLASSES[cls.__name__]
    raise TypeError(
        f"cannot convert {type(hf_model).__name__}: supported transformers classes are "
        f"{', '.join(_HF_CLASSES)}"
    )


def _rules(family: str, kind: str, model: nn.Module) -> list[Rule]:
    if family == "bert":
        return _bert_rules(model, kind)
    prefix = _HF_PREFIX.get((family, kind), "")
    make = _gpt2_rules if family == "gpt2" else _llama_rules
    return make(model, prefix, head=kind == "lm")  # type: ignore[arg-type]


def from_hf(hf_model: nn.Module) -> nn.Module:
    """The netarchitect model equivalent to a transformers GPT-2, BERT or LLaMA model.

    Built from ``hf_model.config`` in the dtype of its weights, on the CPU, holding copies
    of its weights, in the same train/eval mode. Raises ``TypeError`` for unsupported
    classes and ``ValueError`` for configs with no equivalent (e.g. YaRN RoPE rescaling).
    Vision models (ResNet, ConvNeXt, ViT) go to :func:`~.hf_vision.from_hf_vision`.
    """
    if is_hf_vision(hf_model):
        return from_hf_vision(hf_model)
    family, kind = _family_of(hf_model)
    config = hf_model.config
    factory = {"dtype": next(hf_model.parameters()).dtype}
    if family == "gpt2":
        model = _gpt2_from_config(config, factory)
    elif family == "llama":
        model = _llama_from_config(config, factory)
    else:
        pooler = getattr(hf_model, "pooler", None) is not None
        model = _bert_from_config(config, kind, pooler, factory)
    hf_state = {k: v.detach().cpu() for k, v in hf_model.state_dict().items()}
    state = convert_state(hf_state, _rules(family, kind, model), to="ours")
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"nodes.head.weight"} if kind == "base" else set()
    if set(missing) - allowed or unexpected:  # pragma: no cover - the tables cover every key
        unset = sorted(set(missing) - allowed)
        raise RuntimeError(f"conversion left {unset} unset and {unexpected} unused")
    return model.train(hf_model.training)


def to_hf(model: nn.Module, *, base: bool = False, **config_kwargs: Any) -> nn.Module:
    """The transformers model equivalent to a netarchitect GPT-2-, LLaMA- or BERT-style model.

    A :class:`CausalLM` with learned positions becomes ``GPT2LMHeadModel``, one with RoPE
    ``LlamaForCausalLM`` (``base=True``: ``GPT2Model`` / ``LlamaModel``, without the head);
    BERT encoders (:func:`bert` with ``head=None``, ``"mlm"`` or ``"classification"``)
    become ``BertModel``, ``BertForMaskedLM`` or ``BertForSequenceClassification``
    (``base=True``: the ``BertModel`` inside). ``config_kwargs`` go to the transformers
    config (``attn_implementation="eager"``). The result has the model's dtype, device and
    train/eval mode.
    """
    bert_kind = _bert_kind(model)
    if isinstance(model, CausalLM) and not isinstance(model, MoECausalLM):
        family = "gpt2" if model.pos == "learned" else "llama"
        kind = "base" if base else "lm"
        config = _gpt2_config(model) if family == "gpt2" else _llama_config(model)
    elif bert_kind is not None:
        family, kind = "bert", "base" if base else bert_kind
        config = _bert_config(model, bert_kind)
    else:
        raise TypeError(f"cannot convert {type(model).__name__} to a transformers model")
    tf = _transformers()
    config_cls = {"gpt2": tf.GPT2Config, "llama": tf.LlamaConfig, "bert": tf.BertConfig}[family]
    config = config_cls(**{**config, **config_kwargs})
    cls = getattr(tf, _CLASS_OF[(family, kind)])
    extra = {"add_pooling_layer": "pooler" in model.nodes} if cls is tf.BertModel else {}
    hf_model = cls(config, **extra)
    state = convert_state(model.state_dict(), _rules(family, kind, model), to="hf")
    hf_model.load_state_dict(state, strict=True)
    param = next(model.parameters())
    return hf_model.to(device=param.device, dtype=param.dtype).train(model.training)
