"""Each module's role in a model (attention projections, MLP up/down, norms, blocks ...),
found from the model's structure: what a parallel plan is derived from."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ROLES", "Role", "find_roles"]

#: Role names, and what tensor parallelism does with each.
ROLES = {
    "attention": "multi-head attention: local heads = heads / tp",
    "attn_in": "q/k/v projection: column-wise (output features = whole heads)",
    "attn_out": "attention output projection: row-wise",
    "fused_qkv": "one fused q/k/v projection (nn.MultiheadAttention): not sharded",
    "mlp": "feed-forward block",
    "mlp_in": "MLP up/gate projection: column-wise",
    "mlp_out": "MLP down projection: row-wise",
    "norm": "normalisation: replicated (sequence-parallel as an option)",
    "embedding": "token/position embedding: replicated",
    "head": "output head: replicated",
    "block": "a block of the network: one FSDP unit",
}


@dataclass(frozen=True)
class Role:
    """A module's ``kind`` (a key of :data:`ROLES`) and the numbers that constrain sharding
    (``heads``, ``kv_heads``, ``features``: the dimension a column-wise split cuts)."""

    kind: str
    heads: int = 0
    kv_heads: int = 0
    features: int = 0


def _inner_roles(path: str, module: nn.Module) -> dict[str, Role]:
    from ..layers.attention import MultiHeadAttention
    from ..layers.mlp import MLP, GatedMLP

    prefix = f"{path}." if path else ""
    if isinstance(module, MultiHeadAttention):
        return {
            path: Role("attention", module.num_heads, module.num_kv_heads),
            **{f"{prefix}{n}": Role("attn_in") for n in ("q_proj", "k_proj", "v_proj")},
            f"{prefix}out_proj": Role("attn_out"),
        }
    if isinstance(module, GatedMLP):
        hidden = module.up_proj.out_features
        return {
            path: Role("mlp", features=hidden),
            f"{prefix}gate_proj": Role("mlp_in", features=hidden),
            f"{prefix}up_proj": Role("mlp_in", features=hidden),
            f"{prefix}down_proj": Role("mlp_out", features=hidden),
        }
    if isinstance(module, MLP):
        hidden = module.fc1.out_features
        return {
            path: Role("mlp", features=hidden),
            f"{prefix}fc1": Role("mlp_in", features=hidden),
            f"{prefix}fc2": Role("mlp_out", features=hidden),
        }
    if isinstance(module, nn.MultiheadAttention):
        return {path: Role("fused_qkv", module.num_heads, module.num_heads)}
    return {}


def _leaf_role(module: nn.Module) -> Role | None:
    from ..layers.token_embedding import LMHead, TokenEmbedding

    norms = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    if isinstance(module, norms):
        return Role("norm")
    if isinstance(module, (TokenEmbedding, nn.Embedding)):
        return Role("embedding")
    if isinstance(module, LMHead):
        return Role("head")
    return None


def _block_paths(model: nn.Module) -> list[str]:
    """FSDP units: a Network's parameterised nodes (not norms, embeddings or heads); for
    other modules the outermost Transformer and residual conv blocks."""
    from ..layers.conv_blocks import ConvNormAct, _ResNetBlock
    from ..layers.transformer import TransformerBlock
    from ..network import Network

    if isinstance(model, Network):
        return [
            f"nodes.{name}" for name, node in model.nodes.items()
            if any(True for _ in node.parameters()) and _leaf_role(node) is None
        ]
    kinds = (TransformerBlock, _ResNetBlock, ConvNormAct)
    found: list[str] = []
    for name, module in model.named_modules():
        if name and isinstance(module, kinds) and not any(name.startswith(f"{p}.") for p in found):
            found.append(name)
    return found


def find_roles(model: nn.Module) -> dict[str, Role]:
    """``{module path: Role}`` for every module with a role, in ``named_modules`` order.

    A path can hold two roles (a block that is also an embedding); the block wins, since
    FSDP units are what the other roles are grouped into.
    """
    roles: dict[str, Role] = {}
    blocks = set(_block_paths(model))
    for name, module in model.named_modules():
        if name in blocks:
            roles[name] = Role("block")
        inner = _inner_roles(name, module)
        if inner:
            roles.update({k: v for k, v in inner.items() if k not in roles})
        elif name and name not in roles:
            leaf = _leaf_role(module)
            if leaf is not None:
                roles[name] = leaf
    return roles
