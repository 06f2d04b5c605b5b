"""Interoperability with other libraries' models (extras: ``hf``).

:mod:`netarchitect.interop.hf` converts Hugging Face ``transformers`` GPT-2, BERT and
LLaMA models to netarchitect models and back; :mod:`netarchitect.interop.hf_vision` converts
its ResNet, ConvNeXt and ViT image models to netarchitect classifiers. ``transformers`` is
imported only when a conversion runs, so the core never needs it.
"""

from __future__ import annotations

from .hf import from_hf, to_hf
from .hf_vision import from_hf_vision

__all__ = ["from_hf", "from_hf_vision", "to_hf"]
