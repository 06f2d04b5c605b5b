"""Weights on disk: safetensors only (never pickle), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from ._io import atomic_write
from .errors import NetArchitectError

__all__ = ["load_weights", "save_weights"]


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state as safetensors (tied tensors stored once, the file written
    atomically); a Network's spec goes in the metadata."""
    metadata = {"format": "pt"}
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "to_dict"):
        from .spec import spec_hash

        metadata["spec"] = json.dumps(spec.to_dict(), sort_keys=True)
        metadata["spec_hash"] = spec_hash(spec)
    return atomic_write(path, lambda tmp: save_model(model, str(tmp), metadata=metadata))


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load safetensors weights into ``model``.

    A missing, unreadable, empty, truncated or non-safetensors file and weights that do not
    fit the model are each a :class:`~netarchitect.errors.NetArchitectError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise NetArchitectError(f"weights file {str(path)!r} does not exist")
    if not path.is_file():
        raise NetArchitectError(f"weights file {str(path)!r} is not a file")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError) as exc:  # empty, truncated, garbage, unreadable
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise NetArchitectError(f"{path}: not a readable safetensors file ({reason})") from None
    except RuntimeError as exc:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise NetArchitectError(f"{path}: weights do not fit the model: {detail}") from None
    if strict and (missing or unexpected):
        raise NetArchitectError(
            f"{path}: weights do not fit the model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return model
