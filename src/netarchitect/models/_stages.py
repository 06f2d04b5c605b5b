"""Shared builders of the vision families: argument checks, a spec builder, stem/stage/head
helpers, drop-path schedules and the init policies of the papers.

A family builder chains nodes on a :class:`SpecBuilder` (stem, stages of registered
blocks, head), marks its stage outputs, and :meth:`SpecBuilder.build` turns the result
into a :class:`~netarchitect.models._classifier.ClassifierNetwork`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import make_divisible
from ..spec import NetworkSpec
from . import _blocks_conv, _blocks_tokens  # noqa: F401 (registers the family blocks)
from ._classifier import ClassifierNetwork
from ._graph_builder import GraphBuilder

__all__ = [
    "INIT_KAIMING_FAN_OUT",
    "TF_BATCHNORM",
    "SpecBuilder",
    "Stage",
    "check_image_args",
    "check_positive",
    "drop_path_rates",
    "make_divisible",
    "round_repeats",
    "variant",
]

Params = Mapping[str, Any]

#: BatchNorm with TensorFlow's defaults (eps 1e-3, decay 0.99), as torchvision's MobileNetV3
#: and EfficientNet-B5…B7 (ported from TensorFlow checkpoints) use it.
TF_BATCHNORM: Mapping[str, Any] = {"name": "batchnorm2d", "eps": 1e-3, "momentum": 0.01}

#: He et al. init of convolutions (fan-out, ReLU gain) — ResNet, MobileNet, EfficientNet.
INIT_KAIMING_FAN_OUT = (
    {"init": "kaiming_normal", "modules": ["Conv2d"], "args": {"mode": "fan_out"}},
    {"init": "zeros", "modules": ["Conv2d"], "params": ["bias"]},
)


def check_positive(name: str, value: Any, *, integer: bool = True) -> None:
    """Raise ``SpecError`` unless ``value`` is a positive int (or real, ``integer=False``)."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        kind = "integer" if integer else "number"
        raise SpecError(f"{name}={value!r} must be a positive {kind}", path=name)


def check_widths(name: str, widths: Any) -> tuple[int, ...]:
    """A non-empty sequence of positive ints as a tuple, or ``SpecError`` naming ``name``."""
    if isinstance(widths, int) or not isinstance(widths, Sequence) or not widths:
        raise SpecError(f"{name}={widths!r} must be a non-empty list of positive integers",
                        path=name)
    for i, w in enumerate(widths):
        check_positive(f"{name}[{i}]", w)
    return tuple(widths)


def check_image_args(in_chans: Any, num_classes: Any, img_size: Any, **positives: Any) -> None:
    """Validate the arguments every image classifier takes (``num_classes`` may be 0)."""
    check_positive("in_chans", in_chans)
    check_positive("img_size", img_size)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise SpecError(f"num_classes={num_classes!r} must be an integer >= 0", path="num_classes")
    for name, value in positives.items():
        check_positive(name, value, integer=False)


def variant(
    family: Callable[..., ClassifierNetwork], defaults: Params, overrides: Params
) -> ClassifierNetwork:
    """A named variant: the family builder with the variant's numbers, then the caller's."""
    return family(**{**defaults, **overrides})


def round_repeats(repeats: int, depth_mult: float) -> int:
    """EfficientNet's depth rule: ``ceil(depth_mult · repeats)``."""
    return math.ceil(depth_mult * repeats)


def drop_path_rates(rate: float, total: int) -> list[float]:
    """Stochastic-depth rate per block, rising linearly from 0 to ``rate`` (timm's schedule)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise SpecError(f"drop_path_rate={rate!r} must be in [0, 1)", path="drop_path_rate")
    return [rate * i / max(total - 1, 1) for i in range(total)]


@dataclass(frozen=True)
class Stage:
    """``depth`` nodes of registered ``block`` with ``params``; the first also gets ``first``
    (its stride, say). ``pre`` nodes ``(suffix, block, params)`` come before the blocks
    (a downsampling layer). ``reduction`` is the stride of a token-valued stage."""

    block: str
    depth: int
    params: Params = field(default_factory=dict)
    first: Params = field(default_factory=dict)
    pre: Sequence[tuple[str, str, Params]] = ()
    reduction: int | None = None


class SpecBuilder(GraphBuilder):
    """Accumulates the nodes of a single-input classifier spec.

    :meth:`add` chains from the previous node unless ``inputs`` says otherwise;
    :meth:`stage` marks a stage output for ``feature_info``.
    """

    def __init__(self, name: str, in_shape: Sequence[int], input_name: str = "x") -> None:
        super().__init__(name, {input_name: tuple(in_shape)})
        self.stages: list[str] = []
        self.reductions: dict[str, int] = {}
        self.features: str | None = None

    def stage(self, node_id: str | None = None, reduction: int | None = None) -> None:
        """Mark ``node_id`` (default: the last node) as a stage output."""
        node_id = node_id or self.last
        self.stages.append(node_id)
        if reduction is not None:
            self.reductions[node_id] = reduction

    def add_stages(
        self,
        stages: Sequence[Stage],
        *,
        drop_path_rate: float = 0.0,
        start: int = 1,
        prefix: str = "s",
        mark: str = "all",
    ) -> None:
        """Nodes ``{prefix}{i}_b{j}`` for each stage (``{prefix}{i}_{suffix}`` for its
        ``pre`` nodes), with linearly rising ``drop_path``. Marks each stage's output
        (``mark="all"``), only the last stage before each stride (``"stride"``) or every
        block (``"block"``)."""
        rates = iter(drop_path_rates(drop_path_rate, sum(s.depth for s in stages)))
        strides = [st.first.get("stride", 1) for st in stages[1:]] + [2]
        for i, (st, next_stride) in enumerate(zip(stages, strides), start):
            check_positive(f"stage {i} depth", st.depth)
            for suffix, block, params in st.pre:
                self.add(f"{prefix}{i}_{suffix}", block, params)
            for j in range(st.depth):
                rate = next(rates)
                params = {**st.params, **(st.first if j == 0 else {})}
                if rate > 0:
                    params["drop_path"] = rate
                self.add(f"{prefix}{i}_b{j}", st.block, params)
                if mark == "block":
                    self.stage(reduction=st.reduction)
            if mark == "all" or (mark == "stride" and next_stride > 1):
                self.stage(reduction=st.reduction)

    def add_mobile_body(
        self,
        stem_channels: int,
        stages: Sequence[Stage],
        final_channels: int,
        *,
        act_layer: str,
        drop_path_rate: float = 0.0,
        norm_layer: Any = "batchnorm2d",
    ) -> None:
        """MobileNet/EfficientNet body: a 3×3 stride-2 ``stem``, the stages (marked at each
        stride), and a 1×1 ``final_conv`` to ``final_channels``, all with ``norm_layer``
        (left out of the spec when it is the blocks' default BatchNorm)."""
        norm = {} if norm_layer == "batchnorm2d" else {"norm_layer": norm_layer}
        self.add(
            "stem",
            "conv_norm_act",
            {"out_channels": stem_channels, "stride": 2, "act_layer": act_layer, **norm},
        )
        stages = [replace(st, params={**st.params, **norm}) for st in stages]
        self.add_stages(stages, drop_path_rate=drop_path_rate, mark="stride")
        self.add(
            "final_conv",
            "conv_norm_act",
            {"out_channels": final_channels, "kernel_size": 1, "act_layer": act_layer, **norm},
        )

    def add_head(
        self,
        num_classes: int,
        pool: tuple[str, Params] | None = ("global_pool", {}),
        *,
        pre: Sequence[tuple[str, str, Params]] = (),
        drop_rate: float = 0.0,
    ) -> None:
        """Mark the features node, then ``head_pool``, the ``pre`` nodes (``head_*``), an
        optional ``head_drop`` and the classifier ``head`` (identity for 0 classes)."""
        self.features = self.last
        if pool is not None:
            self.add("head_pool", *pool)
        for suffix, block, params in pre:
            self.add(f"head_{suffix}", block, params)
        if drop_rate:
            self.add("head_drop", "dropout", {"p": drop_rate})
        if num_classes:
            self.add("head", "linear", {"out_features": num_classes})
        else:
            self.add("head", "identity")

    def spec(self, init: Sequence[Params] = (), description: str = "") -> NetworkSpec:
        if self.features is None:
            raise SpecError("add_head() was not called: no features node", path="nodes")
        roles = {
            "kind": "classifier",
            "features": self.features,
            "stages": list(self.stages),
            "reductions": dict(self.reductions),
        }
        return self.make_spec(roles, init=init, description=description)

    def build(
        self,
        init: Sequence[Params] = (),
        *,
        description: str = "",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
    ) -> ClassifierNetwork:
        return ClassifierNetwork(
            self.spec(init, description), device=device, dtype=dtype, seed=seed
        )
