"""ODE-Net (Chen et al., 2018): a ResNet whose residual stages are Neural ODE blocks.

The spec is a 3×3 stem ``conv_norm_act``, then per stage a stride-2 ``conv_norm_act``
(stages after the first) and one ``ode_block`` integrating a two-convolution
``ode_conv_func`` over ``t ∈ [0, 1]`` (the continuous limit of the stage's residual
blocks), global average pooling and a linear head. ``augment_dim`` gives ANODE stages
(the channels grow by ``augment_dim`` in each stage's ODE).

:class:`ODERNN` (Rubanova et al., 2019) is the recurrent block for irregularly sampled
series: between observations the hidden state follows an ODE, at each one a GRU cell
updates it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ShapeError, SpecError
from ..layers._factory import check_positive_int, example_tensor, reset_children
from ..layers.ode import MLPODEFunc, ODEBlock
from ..registry import Example, register_block, register_model
from ._classifier import ClassifierNetwork
from ._stages import INIT_KAIMING_FAN_OUT, SpecBuilder, check_image_args, check_positive, variant

__all__ = ["ODERNN", "ode_resnet", "odenet_tiny"]


def ode_resnet(
    *,
    widths: tuple[int, ...] = (64, 128),
    stem_width: int = 32,
    solver: str = "dopri5",
    rtol: float = 1e-3,
    atol: float = 1e-3,
    step_size: float | None = None,
    adjoint: bool = False,
    augment_dim: int = 0,
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.0,
    act_layer: str = "relu",
    norm_layer: str = "batchnorm2d",
    name: str = "ode_resnet",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The ODE-ResNet family builder: one ODE block per stage of width ``widths[i]``;
    stage ``i > 0`` halves the resolution first. Solver arguments go to every ODE block."""
    check_image_args(in_chans, num_classes, img_size, stem_width=stem_width)
    if not widths:
        raise SpecError("widths must name at least one stage", path="widths")
    norm_act = {"act_layer": act_layer, "norm_layer": norm_layer}
    ode: dict[str, Any] = {"solver": solver, "rtol": rtol, "atol": atol}
    if step_size is not None:
        ode["step_size"] = step_size
    if adjoint:
        ode["adjoint"] = True
    if augment_dim:
        ode["augment_dim"] = augment_dim
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add("stem", "conv_norm_act", {"out_channels": stem_width, **norm_act})
    for i, width in enumerate(widths, 1):
        check_positive(f"widths[{i - 1}]", width)
        stride = 1 if i == 1 else 2
        b.add(f"s{i}_down", "conv_norm_act", {"out_channels": width, "stride": stride, **norm_act})
        state = width + augment_dim
        func = {"name": "ode_conv_func", "in_channels": state, "act_layer": act_layer}
        b.add(f"s{i}_ode", "ode_block", {"func": func, **ode})
        b.stage()
    b.add_head(num_classes, drop_rate=drop_rate)
    return b.build(INIT_KAIMING_FAN_OUT, device=device, dtype=dtype, seed=seed)


def _example(**kwargs: Any) -> Example:
    small = {"widths": (4, 6), "stem_width": 4, "num_classes": 3, "img_size": 8, **kwargs}
    skip = {"batch_independence": "the adaptive step size is chosen for the whole batch"}
    return Example(small, (example_tensor(2, 3, 8, 8),), skip=skip)


@register_model("odenet_tiny", example=_example)
def odenet_tiny(**kwargs: Any) -> ClassifierNetwork:
    """A two-stage ODE-Net (widths 64, 128; dopri5 at rtol = atol = 1e-3)."""
    return variant(ode_resnet, {"name": "odenet_tiny"}, kwargs)


@register_block("ode_rnn")
class ODERNN(nn.Module):
    """ODE-RNN (Rubanova et al., 2019): ``h'ᵢ = ODESolve(f, hᵢ₋₁, tᵢ₋₁ → tᵢ)``,
    ``hᵢ = GRUCell(xᵢ, h'ᵢ)``, ``h₀ = 0``; ``f`` is an
    :class:`~netarchitect.layers.ode.MLPODEFunc` solved by an inner
    :class:`~netarchitect.layers.ode.ODEBlock` (whose ``nfe_forward`` after a call is the
    total over all gaps). ``times`` (shared by the batch) need not be evenly spaced.

    Shapes:
        x: ``(B, T, input_size)``, times: ``(T,)`` increasing -> ``(B, T, hidden_size)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        func_hidden_dim: int = 64,
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        step_size: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        func = MLPODEFunc(hidden_size, hidden_dim=func_hidden_dim, **factory)
        self.ode = ODEBlock(func, solver=solver, rtol=rtol, atol=atol, step_size=step_size)
        self.cell = nn.GRUCell(input_size, hidden_size, **factory)
        self.hidden_size = hidden_size

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: Tensor, times: Tensor) -> Tensor:
        if times.ndim != 1 or times.shape[0] != x.shape[1]:
            raise ShapeError(
                f"times has shape {tuple(times.shape)}: expected ({x.shape[1]},), one time per "
                "step of x (B, T, input_size)",
                path="times",
            )
        if times.device.type != "meta" and bool((times[1:] <= times[:-1]).any()):
            raise SpecError("times must be strictly increasing", path="times")
        self.ode.reset()
        h = x.new_zeros(x.shape[0], self.hidden_size)
        states = []
        for i in range(x.shape[1]):
            if i > 0:
                h = self.ode.solve(h, times[i - 1 : i + 1].to(h.dtype))[-1]
            h = self.cell(x[:, i], h)
            states.append(h)
        return torch.stack(states, dim=1)  # (B, T, hidden_size)

    @classmethod
    def example(cls) -> Example:
        kwargs = {
            "input_size": 3,
            "hidden_size": 4,
            "func_hidden_dim": 8,
            "solver": "rk4",
            "step_size": 0.25,
        }
        times = torch.tensor([0.0, 0.3, 1.0, 1.2, 2.0])
        return Example(kwargs, (example_tensor(2, 5, 3), times))
