"""Highway networks (Srivastava, Greff & Schmidhuber, 2015): deep fully connected stacks
that train because each layer can carry its input through.

Each ``highway`` layer computes ``y = H(x) · T(x) + x · (1 - T(x))`` with the transform
gate ``T(x) = σ(W_T x + b_T)``; ``b_T`` starts negative (``gate_bias``), so a fresh deep
stack is close to the identity and gradients reach every layer. ``layer="plain"`` builds
the same depth of ``linear`` + activation layers for comparison: with standard init such
a stack of 50 layers does not train (see ``examples/highway_depth.py``).

Spec: ``stem`` (linear to ``width``) and its activation, ``depth`` layers ``l{j}``, then
an optional dropout and a linear ``head``. Inputs are vectors of ``in_features``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import SpecBuilder, check_image_args, check_positive, variant

__all__ = ["highway_net", "highway_net_50", "plain_net_50"]

_LAYERS = ("highway", "plain")


def highway_net(
    *,
    in_features: int = 64,
    num_classes: int = 10,
    depth: int = 50,
    width: int = 64,
    layer: str = "highway",
    act_layer: str = "relu",
    gate_bias: float = -2.0,
    drop_rate: float = 0.0,
    name: str = "highway_net",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The fully connected family builder: ``layer`` is ``"highway"`` or ``"plain"``."""
    check_positive("in_features", in_features)
    check_image_args(1, num_classes, 1, depth=depth, width=width)
    if layer not in _LAYERS:
        raise SpecError(f"layer={layer!r} must be one of {_LAYERS}", path="layer")
    b = SpecBuilder(name, (in_features,))
    b.add("stem", "linear", {"out_features": width})
    b.add("stem_act", act_layer)
    b.stage()
    for j in range(depth):
        if layer == "highway":
            b.add(f"l{j}", "highway", {"act_layer": act_layer, "gate_bias": gate_bias})
        else:
            b.add(f"l{j}_fc", "linear", {"out_features": width})
            b.add(f"l{j}", act_layer)
    b.stage()
    b.add_head(num_classes, None, drop_rate=drop_rate)
    return b.build(device=device, dtype=dtype, seed=seed)


def _example() -> Example:
    kwargs = {"in_features": 8, "depth": 2, "width": 8, "num_classes": 4}
    return Example(kwargs, (example_tensor(2, 8),))


@register_model("highway_net_50", example=_example)
def highway_net_50(**kwargs: Any) -> ClassifierNetwork:
    """A 50-layer highway network, 64 units wide."""
    return variant(highway_net, {"depth": 50, "name": "highway_net_50"}, kwargs)


@register_model("plain_net_50", example=_example)
def plain_net_50(**kwargs: Any) -> ClassifierNetwork:
    """The plain 50-layer counterpart of :func:`highway_net_50` (linear + ReLU layers)."""
    return variant(highway_net, {"depth": 50, "layer": "plain", "name": "plain_net_50"}, kwargs)
