"""Make meta-device analysis run the kernels real CPU tensors run.

On ``meta`` PyTorch picks other kernels than on CPU for a few high-level functions:
scaled-dot-product attention always takes the math path, and recurrent layers project
their input step by step instead of using oneDNN or one input product. Inside
:class:`CpuKernelsOnMeta`, those calls on meta tensors follow CPU's choice instead
(:mod:`._meta_attention`, :mod:`._meta_rnn`), so FLOP counts and saved activations
measured on meta equal those of real CPU tensors. Calls nested inside other torch
functions (``F.multi_head_attention_forward``'s SDPA) are not seen by a function mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ._common import Inputs, is_meta
from ._meta_attention import fused_attention_on_meta
from ._meta_rnn import gru_on_meta, lstm_on_meta, rnn_relu_on_meta, rnn_tanh_on_meta

__all__: list[str] = []  # private module

HANDLERS: dict[Callable[..., Any], Callable[..., Any]] = {
    F.scaled_dot_product_attention: fused_attention_on_meta,
    torch._VF.lstm: lstm_on_meta,
    torch._VF.gru: gru_on_meta,
    torch._VF.rnn_tanh: rnn_tanh_on_meta,
    torch._VF.rnn_relu: rnn_relu_on_meta,
}
"""Function -> ``handler(*args, **kwargs)`` returning CPU's result on meta, or ``None``."""


class CpuKernelsOnMeta(TorchFunctionMode):
    """Torch-function mode running CPU's kernel choice for meta tensors (see module doc)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        handler = HANDLERS.get(func)
        if handler is not None:
            out = handler(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def cpu_kernels_on_meta(inputs: Inputs, model: nn.Module) -> contextlib.AbstractContextManager:
    """:class:`CpuKernelsOnMeta` when the model or inputs are on meta, else a no-op."""
    return CpuKernelsOnMeta() if is_meta(inputs, model) else contextlib.nullcontext()
