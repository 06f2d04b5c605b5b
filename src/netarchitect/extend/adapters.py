"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) on any module's output.

An adapter maps a module's output ``h`` to ``h + W_up act(W_down h + b_down) + b_up`` with
``W_up``/``b_up`` zero-initialised, so the model is unchanged until it trains. It is
registered as the child ``bottleneck_adapter`` of the module it follows and runs as that
module's forward hook: the base model's parameter names do not change, and copies
(``copy.deepcopy``) carry their adapters along.

:func:`add_bottleneck_adapters` puts one after the attention and/or MLP sub-layer of every
:class:`~netarchitect.layers.transformer.TransformerBlock` (inside the residual, before the
addition — Houlsby's placement; ``config="pfeiffer"`` is after the MLP only);
:func:`insert_adapter` puts one after any module by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..layers._factory import LayerType
from ..layers.activation import get_act_layer
from ..layers.transformer import TransformerBlock
from .lora_layers import LoRATargetError

__all__ = [
    "ADAPTER_CONFIGS",
    "BottleneckAdapter",
    "adapter_parameters",
    "add_bottleneck_adapters",
    "insert_adapter",
    "remove_adapters",
]

#: Which sub-layers of a Transformer block get an adapter.
ADAPTER_CONFIGS = {"houlsby": ("attn", "mlp"), "pfeiffer": ("mlp",)}
ATTR = "bottleneck_adapter"


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``: down-projection to ``bottleneck``, activation, zero-initialised
    up-projection, residual.

    Shapes:
        input ``(*, dim)`` -> output ``(*, dim)``.
    """

    def __init__(self, dim: int, bottleneck: int, *, act_layer: LayerType = "relu",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for key, value in (("dim", dim), ("bottleneck", bottleneck)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{key} must be a positive int, got {value!r}", path=key)
        self.down = nn.Linear(dim, bottleneck, device=device, dtype=dtype)
        self.act = get_act_layer(act_layer)()
        self.up = nn.Linear(bottleneck, dim, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.down.reset_parameters()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.act(self.down(h)))


class _AfterHook:
    """Forward hook applying ``adapter`` to a module's output (the first item of a tuple)."""

    def __init__(self, adapter: BottleneckAdapter) -> None:
        self.adapter = adapter

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (self.adapter(output[0]), *output[1:])
        return self.adapter(output)


def _width(module: nn.Module, name: str) -> int:
    for attr in ("dim", "out_features", "embedding_dim", "hidden_size"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1].out_features
    raise SpecError(f"cannot tell the output width of {name!r}: pass dim=", path="dim")


def _resolve(model: nn.Module, name: str) -> nn.Module:
    for candidate in (name, f"nodes.{name}"):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    from .lora import lora_sites  # its error lists close names

    lora_sites(model, name)
    raise LoRATargetError(f"{name!r} is not a module of the model", path="name")  # pragma: no cover


def insert_adapter(
    model: nn.Module,
    name: str,
    *,
    dim: int | None = None,
    bottleneck: int | None = None,
    reduction: int = 16,
    act_layer: LayerType = "relu",
) -> BottleneckAdapter:
    """Add a bottleneck adapter after module ``name`` (in place) and return it.

    ``dim`` (the module's output width) is read from the module when omitted;
    ``bottleneck`` defaults to ``max(1, dim // reduction)``.
    """
    module = _resolve(model, name)
    if hasattr(module, ATTR):
        raise SpecError(f"{name!r} already has a bottleneck adapter", path="name")
    width = _width(module, name) if dim is None else dim
    ref = next((p for p in module.parameters()), None)
    factory: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    adapter = BottleneckAdapter(width, bottleneck or max(1, width // reduction),
                                act_layer=act_layer, **factory)
    module.add_module(ATTR, adapter)
    module.register_forward_hook(_AfterHook(adapter))
    return adapter


def add_bottleneck_adapters(
    model: nn.Module,
    *,
    config: str | Sequence[str] = "houlsby",
    bottleneck: int | None = None,
    reduction: int = 16,
    act_layer: LayerType = "relu",
) -> list[str]:
    """Adapters after the sub-layers of every Transformer block (``config``: ``"houlsby"``
    — attention and MLP —, ``"pfeiffer"`` — MLP only — or a list of ``"attn"``, ``"mlp"``,
    ``"cross_attn"``); freezes everything else. Returns the adapted modules' names."""
    parts = ADAPTER_CONFIGS.get(config) if isinstance(config, str) else tuple(config)
    if not parts or not set(parts) <= {"attn", "mlp", "cross_attn"}:
        raise SpecError(f"config={config!r}: use 'houlsby', 'pfeiffer' or a list of 'attn', "
                        "'mlp', 'cross_attn'", path="config")
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, TransformerBlock)]
    if not blocks:
        raise LoRATargetError("the model has no TransformerBlock: use insert_adapter(model, name)",
                              path="model")
    names = [f"{n}.{part}.fn" for n, b in blocks for part in parts
             if getattr(b, part, None) is not None]
    for name in names:
        insert_adapter(model, name, bottleneck=bottleneck, reduction=reduction,
                       act_layer=act_layer)
    trainable = {id(p) for p in adapter_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return names


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of every bottleneck adapter in ``model``."""
    return [p for m in model.modules() if isinstance(m, BottleneckAdapter) for p in m.parameters()]


def remove_adapters(model: nn.Module) -> nn.Module:
    """Remove every bottleneck adapter (and its hook) from ``model``; parameters become
    trainable again."""
    for module in list(model.modules()):
        if hasattr(module, ATTR):
            for key, hook in list(module._forward_hooks.items()):
                if isinstance(hook, _AfterHook):
                    del module._forward_hooks[key]
            delattr(module, ATTR)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
