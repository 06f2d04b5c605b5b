"""Interoperability with other libraries' models (extras: ``hf``).

:mod:`netarchitect.interop.hf` converts Hugging Face ``transformers`` GPT-2, BERT and
LLaMA models to netarchitect models and back; ``transformers`` is imported only when a
conversion runs, so the core never needs it.
"""

from __future__ import annotations

from .hf import from_hf, to_hf

__all__ = ["from_hf", "to_hf"]
