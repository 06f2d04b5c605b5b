"""Small interpretable-by-design classifiers as specs (for digits-sized images and tests).

``protopnet_spec``: a few conv-norm-act layers then a ``prototype_head``;
``concept_bottleneck_spec``: an MLP on flattened inputs then a ``concept_bottleneck_head``.
Both build with :func:`netarchitect.build` and train with any task's ``fit`` (the search's
``fit_loop`` adds the heads' auxiliary losses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["concept_bottleneck_spec", "protopnet_spec"]


def protopnet_spec(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    widths: Sequence[int] = (16, 32),
    prototypes_per_class: int = 2,
    prototype_dim: int = 16,
    **head_args: Any,
) -> dict[str, Any]:
    """Conv stages (the second and later halve the resolution) and a ProtoPNet head."""
    nodes: list[dict[str, Any]] = [
        {"id": f"conv{i}", "block": "conv_norm_act",
         "params": {"out_channels": w, "stride": 2 if i else 1}}
        for i, w in enumerate(widths)
    ]
    head = {"num_classes": num_classes, "prototypes_per_class": prototypes_per_class,
            "prototype_dim": prototype_dim, **head_args}
    nodes.append({"id": "prototypes", "block": "prototype_head", "params": head})
    return {"name": "protopnet", "inputs": {"x": {"shape": list(input_shape)}},
            "nodes": nodes, "outputs": ["prototypes"]}


def concept_bottleneck_spec(
    input_shape: Sequence[int],
    num_classes: int,
    class_concepts: Sequence[Sequence[int]],
    *,
    hidden: int = 64,
    **head_args: Any,
) -> dict[str, Any]:
    """Flatten, one hidden ReLU layer, and a concept bottleneck with label-derived concepts."""
    head = {"out_features": num_classes, "num_concepts": len(class_concepts[0]),
            "class_concepts": [list(map(int, row)) for row in class_concepts], **head_args}
    nodes = [
        {"id": "flat", "block": "flatten"},
        {"id": "fc", "block": "linear", "params": {"out_features": hidden}},
        {"id": "act", "block": "relu"},
        {"id": "concepts", "block": "concept_bottleneck_head", "params": head},
    ]
    return {"name": "concept_bottleneck", "inputs": {"x": {"shape": list(input_shape)}},
            "nodes": nodes, "outputs": ["concepts"]}
