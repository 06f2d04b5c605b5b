"""The affine map ``x Wᵀ + b``, with a faster kernel for inference on a few rows.

A decoding step multiplies one token (a few rows) by every weight matrix: the work is
streaming the weights from memory. On CPUs, oneDNN's matmul streams a row-major
``(out, in)`` weight 1.5–2× faster than the BLAS ``gemv`` behind :func:`F.linear`
(measured with GPT-2-small's matrices, ``benchmarks/bench_transformers.py``), so
:func:`linear` uses it when nothing can observe the difference: float32 CPU tensors
outside autograd, tracing, compilation and dispatch modes (the FLOP counters see the
usual ``aten.addmm``), with oneDNN enabled (``torch.backends.mkldnn.flags``). Everything
else goes to :func:`F.linear`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["FEW_ROWS", "linear"]

#: Inputs with at most this many rows (product of the leading dims) take the oneDNN kernel.
FEW_ROWS = 64


def _onednn_linear() -> Callable[..., Tensor] | None:
    if not torch.backends.mkldnn.is_available():  # pragma: no cover - builds without oneDNN
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # pragma: no cover - op absent in this build
        return None


_ONEDNN = _onednn_linear()


def _plain_cpu_float(t: Tensor) -> bool:
    """A dense, contiguous float32 CPU tensor or parameter (no subclass, e.g. DTensor)."""
    return (
        type(t) in (Tensor, torch.nn.Parameter)
        and t.dtype == torch.float32
        and t.device.type == "cpu"
        and t.layout == torch.strided
        and not t.is_nested
        and t.is_contiguous()
    )


def _takes_onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    if torch.compiler.is_compiling():  # first: Dynamo cannot trace _get_mkldnn_enabled()
        return False
    if _ONEDNN is None or x.dim() < 2 or not (_plain_cpu_float(x) and _plain_cpu_float(weight)):
        return False
    if bias is not None and not _plain_cpu_float(bias):
        return False
    rows = x.numel() // max(x.shape[-1], 1)
    if not 0 < rows <= FEW_ROWS:
        return False
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return False
    return torch._C._get_mkldnn_enabled() and not (
        torch._C._is_torch_function_mode_enabled() or _get_current_dispatch_mode() is not None
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``; oneDNN's kernel for few-row float32 inference on CPU.

    Shapes: ``(*, in)``, weight ``(out, in)``, bias ``(out,)`` -> ``(*, out)``.
    """
    if _takes_onednn(x, weight, bias):
        return _ONEDNN(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)
