"""Make models cheaper and faster: compile, mixed precision, checkpointing, fusion, pruning,
quantisation and export (one module per idea, named for the idea so that no module
shadows a function: ``fusion.fuse``, ``pruning.prune``, ``quantization.quantize``). Names
load lazily, so importing this package does not import torchao, onnx or dynamo.

``netarchitect optimize`` (:mod:`.commands`) chains pruning, fusion, quantisation and export
on a registered model, a spec file or a model chosen by ``netarchitect design``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_NAMES = {
    "compile": ("GraphBreak", "compile_model", "compile_modes", "format_graph_breaks",
                "graph_breaks"),
    "precision": ("PrecisionReport", "autocast_policy", "bf16_support", "bf16_supported",
                  "check_precision", "make_grad_scaler", "scaled_step"),
    "checkpointing": ("activation_bytes", "apply_checkpointing", "checkpointed_modules",
                      "remove_checkpointing", "selective_policy"),
    "fusion": ("FusedModel", "FusedQKVAttention", "fuse"),
    "export": ("export_onnx", "export_program"),
    "quantization": ("QuantizationError", "QuantizationReport", "load_quantized",
                     "quantization_report", "quantize", "quantized_size_bytes", "save_quantized"),
    "pruning": ("PruneError", "PruneResult", "prune", "prune_unstructured", "sparsity"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}

__all__ = sorted(_WHERE)  # noqa: PLE0605


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
