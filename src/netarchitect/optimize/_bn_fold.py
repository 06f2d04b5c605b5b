"""Find ``conv/linear -> BatchNorm`` pairs in any ``nn.Module`` and fold them.

Pairs are found on a :mod:`torch.fx` graph, so a fold is only made where the norm
reads the convolution's output and nothing else does (``y = bn(conv(x))`` with no
other use of ``conv(x)``). Modules that fx cannot trace (data-dependent Python
control flow) are searched child by child instead; modules without a BatchNorm are
never traced (they are leaves of the graph).

Folding ``y = γ (W x + b - μ) / sqrt(σ² + ε) + β`` gives ``W' = s W`` and
``b' = s (b - μ) + β`` with ``s = γ / sqrt(σ² + ε)``, computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

__all__ = ["BNPair", "find_bn_pairs", "fold_bn_pair", "foldable_into", "is_batchnorm"]


@dataclass(frozen=True)
class BNPair:
    """A foldable pair: qualified names (under the searched root) of the conv and its norm."""

    conv: str
    bn: str


def is_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm whose eval output is an affine map of its input (running statistics kept)."""
    return isinstance(module, _BatchNorm) and module.running_mean is not None


def foldable_into(module: nn.Module) -> bool:
    """Whether a norm over channel dim 1 can be folded into ``module``'s output channels."""
    if isinstance(module, _ConvNd):
        return not module.transposed
    return isinstance(module, nn.Linear)


def _has_batchnorm(module: nn.Module) -> bool:
    return any(is_batchnorm(m) for m in module.modules())


class _Tracer(fx.Tracer):
    """Trace only through modules that hold a BatchNorm; everything else is a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return foldable_into(m) or isinstance(m, _BatchNorm) or not _has_batchnorm(m)


def _pairs_in_graph(graph: fx.Graph, root: nn.Module) -> list[BNPair]:
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not is_batchnorm(root.get_submodule(str(node.target))):
            continue
        src = node.args[0]  # a BatchNorm's forward takes one tensor
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv: Any = root.get_submodule(str(src.target))
        bn: Any = root.get_submodule(str(node.target))
        if not foldable_into(conv):
            continue
        out = conv.out_channels if isinstance(conv, _ConvNd) else conv.out_features
        if out == bn.num_features:
            pairs.append(BNPair(str(src.target), str(node.target)))
    return pairs


def _call_counts(graph: fx.Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    return counts


def find_bn_pairs(module: nn.Module, prefix: str = "") -> list[BNPair]:
    """Every foldable ``conv -> BatchNorm`` pair under ``module`` (names with ``prefix``)."""
    if not _has_batchnorm(module) or isinstance(module, _BatchNorm):
        return []
    try:
        graph = _Tracer().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure: search the children instead
        pairs = []
        for name, child in module.named_children():
            pairs += find_bn_pairs(child, f"{prefix}{name}.")
        return pairs
    counts = _call_counts(graph)
    return [
        BNPair(prefix + p.conv, prefix + p.bn)
        for p in _pairs_in_graph(graph, module)
        if counts[p.conv] == 1 and counts[p.bn] == 1  # a shared module cannot be folded
    ]


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


@torch.no_grad()
def fold_bn_pair(root: nn.Module, pair: BNPair) -> None:
    """Fold ``pair.bn`` into ``pair.conv`` in place and replace the norm by an identity."""
    from ..layers.basic import Identity

    conv: Any = root.get_submodule(pair.conv)
    bn: Any = root.get_submodule(pair.bn)
    weight = conv.weight
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = -bn.running_mean.double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.double() * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    shape = (-1,) + (1,) * (weight.dim() - 1)
    conv.weight = nn.Parameter(
        (weight.double() * scale.view(shape)).to(weight.dtype), requires_grad=weight.requires_grad
    )
    conv.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=weight.requires_grad)
    _set_submodule(root, pair.bn, Identity())
