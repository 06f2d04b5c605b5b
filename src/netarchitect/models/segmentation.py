"""Semantic segmentation on any feature backbone: its stages plus an FPN decoder head.

``segmentation_model("convnext_tiny", num_classes=21)`` takes the backbone's spec up to
the stages its ``feature_info`` names, adds an ``fpn_head`` node reading those stages
(``merge: args``) and a ``resize_like`` node bringing the logits to the input's exact
size. The result is a spec-built :class:`~netarchitect.network.Network` (``model.spec``
rebuilds it; a :class:`SegmentationNetwork`) mapping ``(B, C, H, W)`` to per-pixel logits
``(B, num_classes, H, W)``; train it with the ``pixel_cross_entropy`` / ``dice`` losses of
:mod:`netarchitect.losses`; :func:`mean_iou` scores it.

No named variant is registered yet (a ``resnet18_fpn_seg``): registered models are swept by
the structured pruner, which cannot yet plan through the decoder's multi-input
(``merge: args``) node, and by fusion parity at 1e-5 on un-normalised logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import SpecError
from ..losses import check_dense_targets
from ..network import Network, build
from ..registry import register_network_kind

__all__ = ["SegmentationNetwork", "mean_iou", "segmentation_model"]


@register_network_kind("segmentation")
class SegmentationNetwork(Network):
    """A spec-built semantic-segmentation network: backbone stages (``roles.stages``) and a
    decoder (``roles.decoder``) giving per-pixel logits at the input's size.

    Shapes:
        x: ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    @property
    def num_classes(self) -> int:
        """Classes predicted per pixel."""
        return int(self.spec.node(self.roles["decoder"]).params["num_classes"])

    def predict(self, x: Tensor) -> Tensor:
        """The most probable class of every pixel ``(B, H, W)`` (int64)."""
        return self(x).argmax(1)


def _pick(info: list[dict[str, Any]], out_indices: Sequence[int] | None, name: str) -> list[int]:
    n = len(info)
    if not n:
        raise SpecError(f"{name} reports no stages in feature_info: nothing to decode")
    if out_indices is None:
        return list(range(n))
    picked = []
    for i in out_indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise SpecError(
                f"out_indices: {i!r} is not a stage of {name} ({n} stages: "
                f"{[s['node'] for s in info]})",
                path="out_indices",
            )
        picked.append(i % n)
    return sorted(set(picked))


def segmentation_model(
    backbone: str,
    num_classes: int,
    *,
    out_indices: Sequence[int] | None = None,
    decoder_channels: int = 64,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **backbone_args: Any,
) -> SegmentationNetwork:
    """The registered classifier ``backbone`` (built with ``backbone_args``) turned into a
    segmentation network: its stages ``out_indices`` (all by default) feed an ``fpn_head``
    with ``num_classes`` outputs per pixel."""
    from ..factory import create_model

    net = create_model(backbone, device="meta", **backbone_args)
    if not (hasattr(net, "feature_info") and hasattr(net, "upstream_nodes")):
        raise SpecError(f"{backbone} has no feature_info: it cannot be a segmentation backbone")
    info = net.feature_info
    picked = [info[i] for i in _pick(info, out_indices, backbone)]
    shapes = {s["node"]: net._infos[s["node"]].shape for s in picked}  # per-sample shapes
    flat = [n for n, shape in shapes.items() if len(shape) != 3]
    if flat:
        raise SpecError(
            f"{backbone}: stage(s) {flat} are not (C, H, W) feature maps "
            f"(shapes {[shapes[n] for n in flat]}); the FPN head needs a convolutional backbone",
            path="backbone",
        )
    stages = [s["node"] for s in picked]
    spec = net.spec.to_dict()
    keep = set(net.upstream_nodes(stages))
    x = spec["inputs"] and next(iter(spec["inputs"]))
    head = {
        "in_channels": [s["num_chs"] for s in picked],
        "num_classes": num_classes,
        "decoder_channels": decoder_channels,
        "upscale": int(picked[0]["reduction"]),
    }
    spec["nodes"] = [n for n in spec["nodes"] if n["id"] in keep] + [
        {"id": "decoder", "block": "fpn_head", "params": head, "inputs": stages, "merge": "args"},
        {"id": "logits", "block": "resize_like", "inputs": ["decoder", x], "merge": "args"},
    ]
    spec["outputs"] = ["logits"]
    spec["name"] = f"{spec['name']}_fpn_seg"
    spec["roles"] = {"kind": "segmentation", "stages": stages, "decoder": "decoder"}
    spec.pop("tie", None)
    return build(spec, seed=seed, device=device, dtype=dtype)  # type: ignore[return-value]


def mean_iou(logits: Tensor, target: Tensor) -> float:
    """Intersection over union of the arg-max prediction per class, averaged over the classes
    present in the prediction or the target."""
    check_dense_targets(logits, target)
    pred = logits.argmax(1)
    ious = []
    for k in range(logits.shape[1]):
        p, t = pred == k, target == k
        union = int((p | t).sum())
        if union:
            ious.append(int((p & t).sum()) / union)
    return float(torch.tensor(ious).mean()) if ious else 1.0
