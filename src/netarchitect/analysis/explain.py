"""``netarchitect explain``: attributions of a model's predictions on inputs from an npz file.

:func:`load_explain_model` reads a registered model name, a spec file, a model folder
(``spec.yaml`` + ``weights.safetensors``, as ``netarchitect design`` and ``extend`` write)
or a design run folder holding one model. :func:`load_explain_inputs` reads ``x`` (and
optional ``y``, ``baseline``) from an npz file and checks them against the model's spec;
:func:`explain` computes the attributions; :func:`write_explanation` writes
``attributions.npz`` and one PNG per sample (a heat map over the image for image inputs, a
bar chart for 1-D inputs) into a new folder, all at once.
"""

from __future__ import annotations

import math
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attribution import (
    AttributionError,
    grad_cam,
    integrated_gradients,
    resolve_layer,
    saliency,
    smoothgrad,
)
from .explain_command import METHODS

__all__ = [
    "MAX_PLOTS",
    "METHODS",
    "ExplainInputs",
    "Explanation",
    "explain",
    "load_explain_inputs",
    "load_explain_model",
    "write_explanation",
]

MAX_PLOTS = 32
"""At most this many samples get a PNG (``attributions.npz`` holds them all)."""


@dataclass(frozen=True)
class ExplainInputs:
    """The samples ``x`` (N, ...), their labels ``y`` (or None) and a ``baseline`` (or None)."""

    x: Tensor
    y: Tensor | None = None
    baseline: Tensor | None = None


@dataclass(frozen=True)
class Explanation:
    """Attributions of one method: shaped like the inputs (saliency, SmoothGrad, IG), at a
    layer's resolution ``(N, 1, h, w)`` (Grad-CAM) or a patch grid ``(N, h, w)`` (rollout);
    ``delta`` is IG's completeness gap per sample; ``extra`` what else ``attributions.npz``
    records (the Grad-CAM ``layer``, rollout's ``num_prefix_tokens``)."""

    method: str
    attributions: Tensor
    targets: Tensor
    predictions: Tensor
    delta: Tensor | None = None
    extra: dict[str, str | int] = field(default_factory=dict)


def load_explain_model(target: str, *, seed: int = 0) -> nn.Module:
    """The model ``target`` names (in eval mode): a registered name, a spec file, a model
    folder, or a design run folder with exactly one model under ``models/``."""
    from ..optimize.commands import load_target

    path = Path(target)
    if path.is_dir() and not (path / "spec.yaml").is_file() and (path / "models").is_dir():
        folders = sorted(p for p in (path / "models").iterdir() if (p / "spec.yaml").is_file())
        if len(folders) != 1:
            names = ", ".join(p.name for p in folders) or "none"
            raise AttributionError(
                f"{path}: a design run with {len(folders)} models ({names}); "
                f"pass one model folder, e.g. {path / 'models' / (folders or [path])[-1].name}"
            )
        path = folders[0]
    model, _ = load_target(str(path), seed=seed)
    return model.eval()


def load_explain_inputs(path: str | Path, model: nn.Module | None = None) -> ExplainInputs:
    """``x`` (required), ``y`` and ``baseline`` from an npz file, checked against the
    model's spec inputs when it has them."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise AttributionError(f"--input {path}: not a readable npz file ({exc})") from None
    if "x" not in arrays:
        keys = ", ".join(arrays) or "none"
        raise AttributionError(f"--input {path}: no array 'x' (its arrays: {keys})")
    x = torch.from_numpy(np.ascontiguousarray(arrays["x"]))
    if x.dim() < 2 or len(x) == 0:
        raise AttributionError(
            f"--input {path}: x has shape {tuple(x.shape)}; expected (N, ...) with N >= 1"
        )
    y = None
    if "y" in arrays:
        y = torch.from_numpy(np.asarray(arrays["y"])).reshape(-1)
        if len(y) != len(x) or y.dtype.is_floating_point and not torch.equal(y, y.round()):
            raise AttributionError(
                f"--input {path}: y must hold one integer class per sample ({len(x)}), "
                f"got shape {tuple(arrays['y'].shape)} of {arrays['y'].dtype}"
            )
        y = y.long()
    baseline = arrays.get("baseline")
    x = _check_against_spec(x, model, path)
    base = None if baseline is None else torch.from_numpy(np.asarray(baseline)).to(x.dtype)
    return ExplainInputs(x, y, base)


def _check_against_spec(x: Tensor, model: nn.Module | None, path: str | Path) -> Tensor:
    spec = getattr(model, "spec", None)
    declared = list(getattr(spec, "inputs", ()))
    if not declared:
        return x.float() if x.dtype.is_floating_point else x
    if len(declared) != 1:
        names = ", ".join(i.name for i in declared)
        raise AttributionError(
            f"the model takes {len(declared)} inputs ({names}); explain handles one-input models"
        )
    want = declared[0]
    if tuple(x.shape[1:]) != tuple(want.shape):
        raise AttributionError(
            f"--input {path}: x has samples of shape {tuple(x.shape[1:])}, the model takes "
            f"{tuple(want.shape)} ({want.name})"
        )
    from .._probe import DTYPES

    dtype = DTYPES[want.dtype]
    if dtype.is_floating_point != x.dtype.is_floating_point:
        raise AttributionError(
            f"--input {path}: x is {x.dtype}, the model takes {want.dtype} ({want.name})"
        )
    return x.to(dtype)


def explain(
    model: nn.Module,
    inputs: ExplainInputs,
    method: str,
    *,
    target: int | None = None,
    layer: str | None = None,
    steps: int = 64,
    baseline: float | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
) -> Explanation:
    """Attributions of ``model``'s scores for ``target`` (else ``y``, else the predicted
    class) by ``method`` (one of :data:`METHODS`); ``head_fusion`` and ``discard_ratio``
    are rollout's."""
    if method not in METHODS:
        raise AttributionError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    x = inputs.x
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise AttributionError(f"the model returns {shape}; explain needs (N, classes) scores")
    predictions = logits.argmax(1)
    targets = _targets(target, inputs.y, predictions, logits.shape[1])
    if method == "rollout":
        return _rollout(model, x, targets, predictions, head_fusion, discard_ratio)
    if not x.dtype.is_floating_point:
        raise AttributionError(
            f"{method} needs float inputs, the model takes {x.dtype} (token ids); "
            "try --method rollout or attention_maps()"
        )
    base = _baseline(inputs.baseline, baseline)
    if method in ("gradcam", "gradcam++"):
        layer = _cam_layer(model, layer)
        cam = grad_cam(model, x, targets, layer, plusplus=method == "gradcam++")
        return Explanation(method, cam, targets, predictions, extra={"layer": layer})
    if method == "ig":
        result = integrated_gradients(model, x, targets, baseline=base, steps=steps)
        return Explanation(method, result.attributions, targets, predictions, result.delta)
    if method == "smoothgrad":
        return Explanation(method, smoothgrad(model, x, targets), targets, predictions)
    return Explanation(method, saliency(model, x, targets), targets, predictions)


def _targets(target: int | None, y: Tensor | None, predictions: Tensor, classes: int) -> Tensor:
    if target is not None:
        if not 0 <= target < classes:
            raise AttributionError(f"--target {target}: the model has classes 0..{classes - 1}")
        return torch.full_like(predictions, target)
    if y is not None:
        if int(y.min()) < 0 or int(y.max()) >= classes:
            raise AttributionError(f"y: labels must lie in 0..{classes - 1}")
        return y
    return predictions


def _baseline(stored: Tensor | None, value: float | None) -> Tensor | float | None:
    if stored is not None and value is not None:
        raise AttributionError("--baseline given and the input file holds 'baseline': pick one")
    return stored if stored is not None else value


def _cam_layer(model: nn.Module, layer: str | None) -> str:
    """``layer``, checked; by default the last ``feature_info`` stage."""
    if layer is None:
        info = getattr(model, "feature_info", None) or []
        if not info:
            raise AttributionError("the model has no feature_info stages: name one with --layer")
        layer = str(info[-1]["node"])
    resolve_layer(model, layer)
    return layer


def _rollout(
    model: nn.Module, x: Tensor, targets: Tensor, predictions: Tensor, head_fusion: str,
    discard_ratio: float,
) -> Explanation:
    from .attention_maps import attention_maps, attention_rollout

    if x.dim() != 4:
        raise AttributionError(
            f"rollout needs image inputs (N, C, H, W), got {tuple(x.shape)}; "
            "for other models read attention_maps() in Python"
        )
    maps = list(attention_maps(model, x).values())
    tokens = maps[0].shape[-1]
    prefix, grid = _patch_grid(tokens, x.shape[-2], x.shape[-1])
    mask = attention_rollout(maps, discard_ratio=discard_ratio, head_fusion=head_fusion,
                             num_prefix_tokens=prefix, grid=grid)
    extra: dict[str, str | int] = {"num_prefix_tokens": prefix}
    return Explanation("rollout", mask, targets, predictions, extra=extra)


def _patch_grid(tokens: int, height: int, width: int) -> tuple[int, tuple[int, int]]:
    """The prefix-token count (class, distillation, register tokens: 0 to 5; one preferred)
    and the patch grid with the image's aspect ratio that fit ``tokens``."""
    for prefix in (1, 0, *range(2, min(tokens, 6))):
        n = tokens - prefix
        h = round(math.sqrt(n * height / width)) if n > 0 else 0
        if h > 0 and n % h == 0 and abs(h / (n // h) - height / width) < 1e-6:
            return prefix, (h, n // h)
    raise AttributionError(f"{tokens} tokens do not form a patch grid of a {height}x{width} image")


def write_explanation(explanation: Explanation, inputs: ExplainInputs, out: Path) -> list[str]:
    """Write ``attributions.npz`` and up to :data:`MAX_PLOTS` PNGs into the new folder
    ``out`` (all at once: written beside it, then renamed). Returns the file names."""
    from .._io import prepare_output_dir, publish_output_dir

    tmp = prepare_output_dir(out)
    try:
        arrays: dict[str, Any] = {
            "attributions": explanation.attributions.detach().cpu().numpy(),
            "targets": explanation.targets.cpu().numpy(),
            "predictions": explanation.predictions.cpu().numpy(),
        }
        if explanation.delta is not None:
            arrays["delta"] = explanation.delta.detach().cpu().numpy()
        arrays.update({k: np.asarray(v) for k, v in explanation.extra.items()})
        np.savez(tmp / "attributions.npz", **arrays)
        files = ["attributions.npz"]
        for i in range(min(len(inputs.x), MAX_PLOTS)):
            name = f"{i:04d}_{explanation.method.replace('+', 'p')}.png"
            _plot(explanation, inputs.x, i, tmp / name)
            files.append(name)
        publish_output_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _heat(explanation: Explanation, x: Tensor, i: int) -> Tensor:
    """Sample ``i``'s attribution as a map over its input: (H, W) for images (channels
    summed in absolute value; Grad-CAM and rollout upsampled), (T, F) or (F,) otherwise."""
    a = explanation.attributions[i].detach().float()
    if x.dim() != 4:
        return a
    if a.dim() == 3 and a.shape[0] == x.shape[1] and a.shape[1:] == x.shape[2:]:
        return a.abs().sum(0)
    a = a.reshape(1, 1, *a.shape[-2:])
    return F.interpolate(a, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[0, 0]


def _plot(explanation: Explanation, x: Tensor, i: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = _heat(explanation, x, i).cpu().numpy()
    title = (f"{explanation.method}: target {int(explanation.targets[i])}, "
             f"predicted {int(explanation.predictions[i])}")
    fig, ax = plt.subplots(figsize=(4, 4) if heat.ndim == 2 else (6, 3))
    try:
        if heat.ndim == 2 and x.dim() == 4:
            ax.imshow(_image(x[i]), cmap="gray" if x.shape[1] == 1 else None)
            ax.imshow(heat, cmap="jet", alpha=0.5)
            ax.axis("off")
        elif heat.ndim == 2:
            ax.imshow(heat, cmap="RdBu_r", aspect="auto")
            ax.set_xlabel("feature")
            ax.set_ylabel("position")
        else:
            values = heat.reshape(-1)
            ax.bar(range(len(values)), values, color=np.where(values >= 0, "tab:red", "tab:blue"))
            ax.set_xlabel("feature")
            ax.set_ylabel("attribution")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)


def _image(sample: Tensor) -> np.ndarray:
    """(C, H, W) scaled to [0, 1] as an (H, W) or (H, W, 3) array for ``imshow``."""
    img = sample.detach().float()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    if img.shape[0] == 1:
        return img[0].cpu().numpy()
    if img.shape[0] >= 3:
        return img[:3].permute(1, 2, 0).cpu().numpy()
    return img.mean(0).cpu().numpy()
