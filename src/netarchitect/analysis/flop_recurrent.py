"""FLOP formulas of fused recurrent kernels (conventions: :mod:`.flop_formulas`).

On CPU a float32 ``nn.LSTM`` without projections runs one oneDNN kernel per layer and
direction (``aten.mkldnn_rnn_layer``). It is counted exactly as ATen's native loop
computes the same layer (``RNN.cpp``), so that switching oneDNN off changes no count:

* MACs per step: ``gates * hidden * (input_size + hidden)`` (input and recurrent products);
* other FLOPs per step and hidden unit: the cell's element-wise work
  (:data:`CELL_ELEMENTWISE`) plus ``2 * gates`` bias additions when the layer has biases.

Backward (``mkldnn_rnn_layer_backward``): oneDNN always computes every gradient (input,
initial state, weights), so its MACs are exactly twice the forward MACs; its other FLOPs
are counted as twice the forward's (the rule used for normalisation backward).
"""

from __future__ import annotations

from typing import Any

from ._flop_registry import Cost, formula, prod

__all__ = ["CELL_ELEMENTWISE", "recurrent_layer_cost"]

CELL_ELEMENTWISE = {1: 2, 3: 10, 4: 13}
"""Gates -> element-wise FLOPs per step and hidden unit of the native cell, biases aside.

RNN (1 gate): add, activation. GRU (3): two (add, sigmoid), ``hg * r``, add, tanh,
``h - n``, ``* z``, ``+ n``. LSTM (4): gates add (4), three sigmoids and a tanh (4),
``f * c``, ``i * g``, add, ``tanh(c)``, ``o *`` (5).
"""


def recurrent_layer_cost(
    steps_x_batch: int, w_ih: Any, w_hh: Any, hidden: int, has_biases: bool
) -> Cost:
    """Forward cost of one recurrent layer and direction over ``steps_x_batch`` inputs."""
    gates = int(w_ih.shape[0]) // hidden
    macs = steps_x_batch * (w_ih.numel() + w_hh.numel())
    other = steps_x_batch * hidden * (CELL_ELEMENTWISE[gates] + 2 * gates * bool(has_biases))
    return macs, other


def _onednn_layer(a: dict[str, Any], w_ih: str, w_hh: str) -> Cost:
    steps_x_batch = prod(a["input"].shape[:2])
    return recurrent_layer_cost(
        steps_x_batch, a[w_ih], a[w_hh], int(a["hidden_size"]), a["has_biases"]
    )


@formula("mkldnn_rnn_layer")
def _onednn_forward(a: dict[str, Any], out: Any) -> Cost:
    return _onednn_layer(a, "weight0", "weight1")


@formula("mkldnn_rnn_layer_backward")
def _onednn_backward(a: dict[str, Any], out: Any) -> Cost:
    macs, other = _onednn_layer(a, "weight1", "weight2")  # this schema counts from 1
    return 2 * macs, 2 * other
