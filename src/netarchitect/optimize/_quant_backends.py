"""The two int8 backends behind :func:`netarchitect.optimize.quantization.quantize`.

Each backend swaps the weights of chosen ``nn.Linear`` modules for symmetric per-row
(per output channel) int8 data and a scale, and can export / re-import exactly those
tensors (``int8 (out, in)`` and ``scale (out,)``), so both save and load the same format.

* ``torchao``: ``torchao.quantization.quantize_`` replaces ``module.weight`` by an
  ``Int8Tensor`` subclass; the module (ours, with its own ``forward``) stays in place.
* ``legacy``: ``torch.ao.nn.quantized.dynamic.Linear`` (fbgemm/oneDNN kernels) replaces the
  module; PyTorch deprecated this path, so its warnings are silenced around the calls only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic as nnqd  # imported by torch itself: no warning

__all__ = ["BACKENDS", "assign_int8", "export_int8", "is_quantized_linear", "quantize_linears"]

BACKENDS = ("torchao", "legacy")

#: The legacy path's deprecation notices: the module's, and the quantised dtypes'.
_LEGACY_WARNINGS = (
    r"(?s)torch\.ao\.quantization is deprecated",
    r"(?s)torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor",
)


@contextmanager
def _quiet_legacy() -> Iterator[None]:
    """Silence exactly the deprecation warnings of ``torch.ao.quantization``."""
    with warnings.catch_warnings():
        for message in _LEGACY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def _torchao_config(mode: str) -> object:
    from torchao.quantization import (  # type: ignore[import-untyped]
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    # set_inductor_config=False: quantising must not change torch's global compiler settings.
    if mode == "int8_dynamic":
        return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    return Int8WeightOnlyConfig(set_inductor_config=False)


def _legacy_linear(module: nn.Linear) -> nn.Module:
    """``module`` as a dynamic int8 ``Linear`` (per-channel symmetric weight scales)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig

    shell = nn.Linear(module.in_features, module.out_features, bias=False, device="meta")
    shell.weight, shell.bias = module.weight, module.bias  # from_float wants exactly nn.Linear
    shell.qconfig = per_channel_dynamic_qconfig  # type: ignore[assignment]
    return nnqd.Linear.from_float(shell)


def _set_submodule(model: nn.Module, fqn: str, module: nn.Module) -> None:
    parent, _, name = fqn.rpartition(".")
    setattr(model.get_submodule(parent), name, module)


def quantize_linears(model: nn.Module, fqns: list[str], mode: str, backend: str) -> None:
    """Quantise the ``nn.Linear`` modules named ``fqns`` of ``model`` in place."""
    if backend == "legacy":
        with _quiet_legacy():
            for fqn in fqns:
                _set_submodule(model, fqn, _legacy_linear(cast(nn.Linear, model.get_submodule(fqn))))
        return
    from torchao.quantization import quantize_  # type: ignore[import-untyped]

    chosen = set(fqns)
    quantize_(model, _torchao_config(mode), filter_fn=lambda _m, fqn: fqn in chosen)


def _is_legacy(module: nn.Module) -> bool:
    return isinstance(module, nnqd.Linear)


def _torchao_weight(module: nn.Module) -> Any:
    weight = getattr(module, "weight", None)
    if isinstance(weight, Tensor) and hasattr(weight, "qdata") and hasattr(weight, "scale"):
        return weight
    return None


def is_quantized_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a Linear quantised by one of the backends."""
    return _is_legacy(module) or (
        isinstance(module, nn.Linear) and _torchao_weight(module) is not None
    )


def export_int8(module: nn.Module) -> dict[str, Tensor]:
    """The quantised Linear's ``weight`` (int8 ``(out, in)``), ``weight_scale`` (``(out,)``)
    and ``bias`` (when present), as plain tensors."""
    if _is_legacy(module):
        with _quiet_legacy():
            qweight, bias = module._weight_bias()  # type: ignore[operator]
        out = {"weight": qweight.int_repr(), "weight_scale": qweight.q_per_channel_scales()}
    else:
        weight = _torchao_weight(module)
        assert weight is not None, f"{type(module).__name__} is not quantised"
        out = {"weight": weight.qdata, "weight_scale": weight.scale.reshape(-1)}
        bias = module.bias
    if bias is not None:
        out["bias"] = bias.detach()
    return {k: v.detach().contiguous() for k, v in out.items()}


def assign_int8(module: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Overwrite a quantised Linear's int8 data, scales and bias with ``tensors`` (as
    :func:`export_int8` returns them)."""
    int8, scale, bias = tensors["weight"], tensors["weight_scale"], tensors.get("bias")
    if _is_legacy(module):
        zeros = torch.zeros(scale.shape, dtype=torch.long)
        qweight = torch._make_per_channel_quantized_tensor(int8, scale, zeros, 0)
        with _quiet_legacy():
            module.set_weight_bias(qweight, bias)  # type: ignore[operator]
        return
    weight = _torchao_weight(module)
    assert weight is not None, f"{type(module).__name__} is not quantised"
    with torch.no_grad():
        weight.qdata.copy_(int8)
        weight.scale.copy_(scale.reshape(weight.scale.shape))
        if bias is not None:
            module.bias.copy_(bias)  # type: ignore[operator]
