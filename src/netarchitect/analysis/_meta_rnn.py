"""Run ``nn.LSTM``/``nn.GRU``/``nn.RNN`` on the meta device the way they run on CPU.

On CPU tensors ATen picks one of two implementations (``aten/src/ATen/native/RNN.cpp``):

* **oneDNN** (``use_mkldnn``: oneDNN built and enabled, a non-empty float32 input, or
  bfloat16/float16 where the CPU supports them — float16 only without autograd) for an
  LSTM without projections: one ``aten.mkldnn_rnn_layer`` per layer and direction
  (``mkldnn/RNN.cpp: mkldnn_rnn``);
* otherwise the **native loop**, which on CPU computes the input projection of all steps
  as one product before stepping the cell (``FullLayer``: ``inputs.device().is_cpu()``).

On meta tensors ATen takes neither: it projects the input at every step. Counts and saved
tensors would then differ from CPU (the per-step weight-gradient sums, the missing oneDNN
kernel). The functions below mirror the CPU code, op for op, in Python (dense inputs and
packed sequences alike) and are used for meta tensors only; real tensors run as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__: list[str] = []  # private module

_ONEDNN_LSTM = 2  # ideep::rnn_kind::LSTM

Hidden = Any  # a tensor, or (h, c) for an LSTM


class _Params(NamedTuple):
    w_ih: torch.Tensor
    w_hh: torch.Tensor
    b_ih: torch.Tensor | None
    b_hh: torch.Tensor | None
    w_hr: torch.Tensor | None


def _gather(params: Sequence[torch.Tensor], biases: bool, projections: bool) -> list[_Params]:
    """``gather_params``: the flat weight list as one parameter set per layer and direction."""
    step = 2 + 2 * biases + projections
    out = []
    for i in range(0, len(params), step):
        p = params[i : i + step]
        b_ih, b_hh = (p[2], p[3]) if biases else (None, None)
        out.append(_Params(p[0], p[1], b_ih, b_hh, p[-1] if projections else None))
    return out


def _simple_cell(act: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def cell(x: torch.Tensor, h: torch.Tensor, p: _Params) -> torch.Tensor:
        return act(F.linear(h, p.w_hh, p.b_hh).add_(x))

    return cell


def _gru_cell(x: torch.Tensor, h: torch.Tensor, p: _Params) -> torch.Tensor:
    ig = x.unsafe_chunk(3, 1)
    hg = F.linear(h, p.w_hh, p.b_hh).unsafe_chunk(3, 1)
    reset = hg[0].add_(ig[0]).sigmoid_()
    update = hg[1].add_(ig[1]).sigmoid_()
    new = ig[2].add(hg[2].mul_(reset)).tanh_()
    return (h - new).mul_(update).add_(new)


def _lstm_cell(x: torch.Tensor, hidden: Hidden, p: _Params) -> Hidden:
    hx, cx = hidden
    gates = F.linear(hx, p.w_hh, p.b_hh).add_(x)
    i, f, g, o = gates.unsafe_chunk(4, 1)
    i, f, g, o = i.sigmoid_(), f.sigmoid_(), g.tanh_(), o.sigmoid_()
    cy = (f * cx).add_(i * g)
    hy = o * cy.tanh()
    if p.w_hr is not None:
        hy = torch.matmul(hy, p.w_hr.t())
    return hy, cy


def _output(hidden: Hidden) -> torch.Tensor:
    return hidden[0] if isinstance(hidden, tuple) else hidden


def _narrow(hidden: Hidden, start: int, end: int) -> Hidden:
    """``hidden_slice``: rows ``start:end`` of the state (of both states for an LSTM)."""
    if isinstance(hidden, tuple):
        return tuple(h.narrow(0, start, end - start) for h in hidden)
    return hidden.narrow(0, start, end - start)


def _concat(hiddens: Sequence[Hidden]) -> Hidden:
    """``hidden_concat``: states stacked along the batch (each state for an LSTM)."""
    if isinstance(hiddens[0], tuple):
        return tuple(torch.cat(parts, 0) for parts in zip(*hiddens))
    return torch.cat(list(hiddens), 0)


Layer = Callable[[Callable[..., Hidden], torch.Tensor, Hidden, _Params, bool], Any]


def _full_layer(
    cell: Callable[..., Hidden], x: torch.Tensor, hidden: Hidden, p: _Params, reverse: bool
) -> tuple[torch.Tensor, Hidden]:
    """``FullLayer``/``FullBidirectionalLayer`` on CPU: one input product, then the steps."""
    steps = F.linear(x, p.w_ih, p.b_ih).unbind(0)  # (T, B, G*H) -> T x (B, G*H)
    outputs = []
    for step in reversed(steps) if reverse else steps:
        hidden = cell(step, hidden, p)
        outputs.append(_output(hidden))
    if reverse:
        outputs.reverse()
    return torch.stack(outputs, 0), hidden


def _packed_layer(batch_sizes: list[int]) -> Layer:
    """``PackedLayer`` (forward) and ``ReversedPackedLayer`` on CPU over packed ``data``."""

    def forward(
        cell: Callable[..., Hidden], data: torch.Tensor, hidden: Hidden, p: _Params
    ) -> tuple[torch.Tensor, Hidden]:
        x = F.linear(data, p.w_ih, p.b_ih)  # (N, G*H) for all steps at once
        outputs, finished, offset, last = [], [], 0, batch_sizes[0]
        for size in batch_sizes:
            step = x.narrow(0, offset, size)
            offset += size
            if size < last:  # sequences that ended keep their final state
                finished.append(_narrow(hidden, size, last))
                hidden = _narrow(hidden, 0, size)
            last = size
            hidden = cell(step, hidden, p)
            outputs.append(_output(hidden))
        finished.append(hidden)
        finished.reverse()
        return torch.cat(outputs, 0), _concat(finished)

    def backward(
        cell: Callable[..., Hidden], data: torch.Tensor, initial: Hidden, p: _Params
    ) -> tuple[torch.Tensor, Hidden]:
        x = F.linear(data, p.w_ih, p.b_ih)
        offset, last = data.size(0), batch_sizes[-1]
        hidden, outputs = _narrow(initial, 0, last), []
        for size in reversed(batch_sizes):
            if size > last:  # longer sequences join with their initial state
                hidden = _concat([hidden, _narrow(initial, last, size)])
            step = x.narrow(0, offset - size, size)
            offset -= size
            last = size
            hidden = cell(step, hidden, p)
            outputs.append(_output(hidden))
        outputs.reverse()
        return torch.cat(outputs, 0), hidden

    def layer(
        cell: Callable[..., Hidden], data: torch.Tensor, hidden: Hidden, p: _Params, reverse: bool
    ) -> tuple[torch.Tensor, Hidden]:
        return (backward if reverse else forward)(cell, data, hidden, p)

    return layer


def _native(
    cell: Callable[..., Hidden],
    layer_fn: Layer,
    x: torch.Tensor,
    hiddens: Sequence[Hidden],
    params: list[_Params],
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
) -> tuple[torch.Tensor, list[Hidden]]:
    """``apply_layer_stack`` over (bidirectional) layers."""
    directions = 2 if bidirectional else 1
    finals: list[Hidden] = []
    for layer in range(num_layers):
        outs = []
        for d in range(directions):
            index = layer * directions + d
            out, final = layer_fn(cell, x, hiddens[index], params[index], d > 0)
            outs.append(out)
            finals.append(final)
        x = outs[0] if directions == 1 else torch.cat(outs, outs[0].dim() - 1)
        if dropout != 0 and train and layer < num_layers - 1:
            x = torch.dropout(x, dropout, True)
    return x, finals


def cpu_uses_onednn(x: torch.Tensor) -> bool:
    """``use_mkldnn`` of ATen's RNN for a CPU input like ``x`` (LSTM without projections)."""
    if not (torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled()):
        return False
    if x.numel() == 0:
        return False
    if x.dtype == torch.float32:
        return True
    if x.dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if x.dtype == torch.float16:
        return not torch.is_grad_enabled() and bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


def _onednn_lstm(
    x: torch.Tensor,
    hx: torch.Tensor,
    cx: torch.Tensor,
    params: Sequence[torch.Tensor],
    biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mkldnn_rnn``: one oneDNN layer per layer and direction."""
    x = (x.transpose(0, 1) if batch_first else x).contiguous()
    hx, cx = hx.contiguous(), cx.contiguous()
    stride, directions, hidden = (4 if biases else 2), (2 if bidirectional else 1), hx.size(2)
    hys, cys = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(directions):
            index = layer * directions + d
            w = params[index * stride : (index + 1) * stride]
            # without biases ATen passes zeros shaped like the weights (and saves them)
            b_ih = w[2] if biases else torch.zeros_like(w[0], memory_format=torch.contiguous_format)
            b_hh = w[3] if biases else torch.zeros_like(w[1], memory_format=torch.contiguous_format)
            flags = (d > 0, [], _ONEDNN_LSTM, hidden, num_layers, biases, bidirectional)
            out, hy, cy, _ = torch.ops.aten.mkldnn_rnn_layer(
                x, w[0], w[1], b_ih, b_hh, hx[index], cx[index], *flags, batch_first, train
            )
            outs.append(out)
            hys.append(hy)
            cys.append(cy)
        x = outs[0] if directions == 1 else torch.cat(outs, -1)
        if dropout != 0 and train and layer < num_layers - 1:
            x = torch.dropout(x, dropout, True)
    out = x.transpose(0, 1) if batch_first else x
    return out, torch.stack(hys, 0), torch.stack(cys, 0)


def _is_meta(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_meta


def lstm_on_meta(x: Any, *args: Any) -> Any:
    """``torch._VF.lstm`` as CPU runs it, for meta tensors; ``None`` for real tensors.

    Dense: ``(input, (h0, c0), params, biases, layers, dropout, train, bidirectional,
    batch_first)``; packed: ``(data, batch_sizes, (h0, c0), params, biases, layers,
    dropout, train, bidirectional)`` (ATen never uses oneDNN for packed sequences).
    """
    if not _is_meta(x):
        return None
    packed = isinstance(args[0], torch.Tensor)
    if packed:
        batch_sizes, (h0, c0), params, biases, num_layers, dropout, train, bidirectional = args
        layer_fn, batch_first = _packed_layer(batch_sizes.tolist()), False
    else:
        (h0, c0), params, biases, num_layers, dropout, train, bidirectional, batch_first = args
        layer_fn = _full_layer
    projections = h0.size(2) != c0.size(2)
    if not packed and not projections and cpu_uses_onednn(x):
        return _onednn_lstm(
            x, h0, c0, params, biases, num_layers, dropout, train, bidirectional, batch_first
        )
    seq = x.transpose(0, 1) if batch_first else x
    out, finals = _native(
        _lstm_cell,
        layer_fn,
        seq,
        list(zip(h0.unbind(0), c0.unbind(0))),
        _gather(params, biases, projections),
        num_layers,
        dropout,
        train,
        bidirectional,
    )
    out = out.transpose(0, 1) if batch_first else out
    return out, torch.stack([h for h, _ in finals], 0), torch.stack([c for _, c in finals], 0)


def _one_hidden_on_meta(cell: Callable[..., Hidden]) -> Callable[..., Any]:
    def run(x: Any, *args: Any) -> Any:
        """``torch._VF.gru``/``rnn_tanh``/``rnn_relu`` as CPU runs them, for meta tensors.

        Dense: ``(input, hx, params, biases, layers, dropout, train, bidirectional,
        batch_first)``; packed: ``(data, batch_sizes, hx, params, biases, layers, dropout,
        train, bidirectional)``.
        """
        if not _is_meta(x):
            return None
        if isinstance(args[1], torch.Tensor):  # packed: args[1] is hx, not the params
            batch_sizes, hx, params, biases, num_layers, dropout, train, bidirectional = args
            layer_fn, batch_first = _packed_layer(batch_sizes.tolist()), False
        else:
            hx, params, biases, num_layers, dropout, train, bidirectional, batch_first = args
            layer_fn = _full_layer
        seq = x.transpose(0, 1) if batch_first else x
        out, finals = _native(
            cell,
            layer_fn,
            seq,
            hx.unbind(0),
            _gather(params, biases, False),
            num_layers,
            dropout,
            train,
            bidirectional,
        )
        out = out.transpose(0, 1) if batch_first else out
        return out, torch.stack(finals, 0)

    return run


gru_on_meta = _one_hidden_on_meta(_gru_cell)
rnn_tanh_on_meta = _one_hidden_on_meta(_simple_cell(torch.tanh))
rnn_relu_on_meta = _one_hidden_on_meta(_simple_cell(torch.relu))
