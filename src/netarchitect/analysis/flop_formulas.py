"""Cost formulas for ATen operators: multiply-accumulates (MACs) and "other" FLOPs.

Conventions (every number the analysis reports follows from these rules):

* **MACs** count multiply-accumulate pairs of matrix products and convolutions. One MAC
  is two FLOPs, so ``flops = 2 * macs``. Padding zeros of a convolution are counted.
* **Bias additions** of ``addmm``/``baddbmm``/``linear``/convolutions are one *other* FLOP
  per output element (``flops`` stays ``2 * macs``).
* **Other FLOPs** (element-wise, normalisation, softmax, pooling, reductions) are
  estimates with these per-element costs, forward or backward alike:

  ======================================  ======================================
  element-wise op (add, mul, relu, gelu,   1 per output element
  exp, comparisons, *_backward of them)
  reduction (sum, mean, amax, var, norm,   1 per input element
  cumsum, ...)
  softmax / log_softmax                    5 per element (max, sub, exp, sum, div)
  softmax backward                         4 per element
  layer/group/batch norm (training)        5 per element, +1 for weight, +1 for bias
  batch norm with running statistics       2 per element, +1 weight, +1 bias
  RMS norm                                 4 per element, +1 for weight
  any norm backward                        2 x its forward cost
  max/avg pooling                          output elements x kernel size
  adaptive pooling                         1 per input element
  pooling backward                         1 per gradient-input element
  linear/bilinear/bicubic/trilinear        3 / 7 / 31 / 15 per output element
  upsampling (and their backward)
  loss functions (mse, bce, huber, ...)    3 per input element, backward 2
  nll_loss (forward/backward)              1 per target element
  native_dropout (forward/backward)        1 per element (without autograd, CPU dropout
                                           runs ``div_`` + ``mul``: 2 per element)
  cdist (forward/backward)                 3 per pair and feature
  reflection/replication padding backward  1 per padded element (its gradient is
                                           added back to the source element)
  fold (``col2im``, ``unfold`` backward)   1 per input (patch) element
  ======================================  ======================================

* **Attention** (every SDPA kernel, the math fallback and ``nn.MultiheadAttention``'s
  fused path) is counted over the *full* ``L x S`` score matrix: a causal mask saves
  nothing (as in ``torch.utils.flop_counter``). Forward MACs are
  ``batch*heads * L*S*(E + Ev)``; backward MACs are exactly twice that (the four
  gradient products; flash kernels' recomputation of ``Q K^T`` is not counted). Other
  FLOPs mirror the math fallback (``_scaled_dot_product_attention_math``) so that a
  fused CPU/GPU kernel and the math path report identical numbers without dropout:
  ``q.numel() + k.numel()`` for the scaling, one per score for a mask (or causal), five
  per score for the softmax, one per score for dropout in a fused kernel; backward: four
  per score for the softmax gradient plus the same scaling (plus one per expanded key and
  value element for grouped-query attention, whose gradients are summed over groups).
  On the meta device attention runs the kernel CPU would pick (:mod:`._meta_kernels`).
* **Nested tensors** (the padding-mask fast paths of ``nn.TransformerEncoder`` and
  ``nn.MultiheadAttention`` in eval mode without autograd) are counted at their padded
  shape: exactly what the dense path computes on the same padded input with the key
  padding mask (see :mod:`.flop_attention`).
* **Recurrent layers**: oneDNN's fused LSTM layer counts as ATen's native loop computes
  the same layer — per step ``gates * H * (input + H)`` MACs plus the cell's element-wise
  work — and its backward as twice its forward (see :mod:`.flop_recurrent`). On meta,
  recurrent layers run CPU's implementation (oneDNN or the native loop).
* **Lookups and scatters**: ``embedding``, ``gather``, ``index_select``, ``index``,
  plain ``scatter``/``index_put``/``index_copy`` move memory and cost 0 FLOPs; they are
  still listed in ``by_operator`` (as lookups). ``scatter_add``, ``index_add``,
  ``scatter_reduce``, ``index_reduce``, accumulating ``index_put`` and
  ``embedding_dense_backward`` cost one other FLOP per source element.
* **Zero-cost** ops do no arithmetic: views and their ``*_copy`` forms, copies,
  ``detach``, creation, random number generation, padding, concatenation, selection like
  ``where``/``masked_fill``, index bookkeeping (``select_backward``, ``slice_backward``,
  ``unsafe_split`` ...), packing and nested-tensor construction. They are listed in
  :data:`ZERO_COST`. Any other operator without a formula is reported as *uncounted*
  (missing work), never silently as zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import flop_recurrent  # noqa: F401  (registers its formulas)
from ._flop_registry import (
    FORMULAS,
    LOSS,
    LOSS_BACKWARD,
    NORM,
    NORM_RUNNING_STATS,
    RMS_NORM,
    SOFTMAX,
    SOFTMAX_BACKWARD,
    UPSAMPLE,
    Cost,
    Formula,
    bias_cost,
    elementwise,
    first,
    formula,
    numel,
    prod,
    reduction,
)
from .flop_attention import attention_cost, remember_padding

__all__ = [
    "ELEMENTWISE",
    "FORMULAS",
    "LOOKUPS",
    "REDUCTIONS",
    "TRACKERS",
    "ZERO_COST",
    "Cost",
    "OpInfo",
    "attention_cost",
    "classify",
    "numel",
    "op_display_name",
]


def _words(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------
# operator families
# ---------------------------------------------------------------------------
ELEMENTWISE = frozenset(
    _words(
        """
    abs absolute acos acosh add addcdiv addcmul angle asin asinh atan atan2 atanh
    bitwise_and bitwise_left_shift bitwise_not bitwise_or bitwise_right_shift bitwise_xor
    ceil celu clamp clamp_max clamp_min clip copysign cos cosh deg2rad digamma div divide
    elu eq erf erfc erfinv exp exp2 expm1 float_power floor floor_divide fmax fmin fmod frac
    ge gelu glu greater greater_equal gt hardshrink hardsigmoid hardswish hardtanh heaviside
    hypot i0 igamma igammac isfinite isinf isnan isneginf isposinf le leaky_relu lerp less
    less_equal lgamma log log10 log1p log2 log_sigmoid_forward logaddexp logaddexp2
    logical_and logical_not logical_or logical_xor logit lt maximum minimum mish mul
    multiply nan_to_num ne neg negative nextafter not_equal polygamma pow _prelu_kernel
    rad2deg reciprocal relu relu6 remainder round rrelu_with_noise rsqrt rsub sgn sigmoid
    sign signbit silu sin sinc sinh softplus softshrink sqrt square sub subtract tan tanh
    threshold true_divide trunc xlogy special_entr special_erfcx special_xlog1py
    threshold_backward gelu_backward silu_backward sigmoid_backward tanh_backward
    elu_backward leaky_relu_backward hardswish_backward hardsigmoid_backward
    hardtanh_backward mish_backward softplus_backward log_sigmoid_backward glu_backward
    _prelu_kernel_backward rrelu_with_noise_backward softshrink_backward
    hardshrink_backward logit_backward native_dropout_backward
    _foreach_add _foreach_sub _foreach_mul _foreach_div _foreach_addcmul _foreach_addcdiv
    _foreach_sqrt _foreach_lerp _foreach_neg _foreach_exp _foreach_maximum _foreach_pow
    """
    )
)
"""Element-wise operators: 1 other FLOP per output element."""

REDUCTIONS = frozenset(
    _words(
        """
    sum mean nansum nanmean prod amax amin aminmax max min argmax argmin var std var_mean
    std_mean norm linalg_vector_norm _foreach_norm logsumexp cumsum cumprod cummax cummin
    logcumsumexp _logcumsumexp any all count_nonzero segment_reduce
    """
    )
)
"""Reductions and scans: 1 other FLOP per input element."""

ZERO_COST = frozenset(
    _words(
        """
    alias as_strided _reshape_alias view _unsafe_view view_as_real view_as_complex reshape
    expand t transpose permute squeeze unsqueeze unflatten flatten select slice
    narrow split split_with_sizes unbind chunk unfold diagonal movedim clone contiguous copy
    unsafe_split unsafe_split_with_sizes unsafe_chunk
    alias_copy as_strided_copy expand_copy permute_copy t_copy transpose_copy squeeze_copy
    unsqueeze_copy view_copy select_copy slice_copy narrow_copy split_copy
    split_with_sizes_copy unbind_copy diagonal_copy unfold_copy detach_copy _reshape_copy
    view_as_real_copy view_as_complex_copy _neg_view_copy _conj_copy
    select_backward slice_backward diagonal_backward unfold_backward as_strided_scatter
    slice_scatter select_scatter diagonal_scatter
    _copy_from _copy_from_and_resize _to_copy to detach lift_fresh lift_fresh_copy
    _local_scalar_dense cat stack _chunk_cat constant_pad_nd reflection_pad1d
    reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d replication_pad3d
    _pad_circular repeat repeat_interleave roll flip rot90 tril triu where masked_fill
    diag_embed empty empty_like empty_strided empty_permuted new_empty new_empty_strided
    zeros zeros_like new_zeros ones ones_like new_ones full full_like new_full fill zero
    arange linspace logspace scalar_tensor eye tril_indices triu_indices _efficientzerotensor
    rand rand_like randn randn_like randint randint_like randperm bernoulli normal uniform
    exponential geometric random set resize resize_as _pin_memory
    is_pinned pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle
    upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d
    _upsample_nearest_exact2d _upsample_nearest_exact3d im2col
    _pack_padded_sequence _pack_padded_sequence_backward _pad_packed_sequence
    _nested_tensor_from_mask _nested_tensor_from_mask_left_aligned _nested_from_padded
    _nested_from_padded_and_nested_example _nested_tensor_from_tensor_list to_padded_tensor
    _nested_tensor_size _nested_tensor_strides _nested_tensor_storage_offsets
    _nested_view_from_buffer _nested_view_from_buffer_copy _nested_view_from_jagged
    _nested_view_from_jagged_copy _nested_get_values _nested_get_values_copy
    _nested_get_offsets _nested_get_lengths _nested_get_ragged_idx _nested_get_jagged_dummy
    _nested_get_min_seqlen _nested_get_max_seqlen _nested_compute_contiguous_strides_offsets
    size sym_size stride sym_stride storage_offset
    sym_storage_offset numel sym_numel dim is_contiguous sym_is_contiguous
    is_strides_like_format is_non_overlapping_and_dense is_same_size
    _has_compatible_shallow_copy_type _conj conj _neg_view resolve_conj resolve_neg
    _assert_async _assert_tensor_metadata _functional_assert_async record_stream
    _assert_scalar sym_constrain_range sym_constrain_range_for_size _unsafe_masked_index
    device layout
    """
    )
)
"""Operators that do no arithmetic — views and their ``*_copy`` forms, copies, creation,
random numbers, padding, concatenation, selection, index bookkeeping (``select_backward``,
``slice_backward``, ``unsafe_split`` ...) and nested-tensor construction: 0 FLOPs by
definition, not listed. Everything else without a formula is *uncounted* (missing work)."""

LOOKUPS = frozenset(
    _words(
        """
    embedding gather index_select index _unsafe_index take take_along_dim masked_select
    index_copy index_fill masked_scatter put scatter index_put _index_put_impl
    """
    )
)
"""Memory lookups: 0 FLOPs, but listed in ``by_operator`` (``scatter``/``index_put`` only
when they do not reduce; see :func:`_scatter`)."""


# ---------------------------------------------------------------------------
# formulas
# ---------------------------------------------------------------------------
# -- matrix products -----------------------------------------------------------
@formula("mm", "bmm", "_scaled_mm")
def _mm(a: dict[str, Any], out: Any) -> Cost:
    return numel(out) * a["self"].shape[-1], 0


@formula("addmm", "baddbmm")
def _addmm(a: dict[str, Any], out: Any) -> Cost:
    first = a["mat1"] if "mat1" in a else a["batch1"]
    return numel(out) * first.shape[-1], numel(out)


@formula("_addmm_activation")
def _addmm_activation(a: dict[str, Any], out: Any) -> Cost:
    return numel(out) * a["mat1"].shape[-1], 2 * numel(out)


@formula("addbmm")
def _addbmm(a: dict[str, Any], out: Any) -> Cost:
    b1 = a["batch1"]
    return b1.shape[0] * numel(out) * b1.shape[-1], numel(out)


@formula("mv")
def _mv(a: dict[str, Any], out: Any) -> Cost:
    return numel(out) * a["self"].shape[-1], 0


@formula("addmv")
def _addmv(a: dict[str, Any], out: Any) -> Cost:
    return numel(out) * a["mat"].shape[-1], numel(out)


@formula("dot", "vdot")
def _dot(a: dict[str, Any], out: Any) -> Cost:
    return a["self"].numel(), 0


@formula("addr")
def _addr(a: dict[str, Any], out: Any) -> Cost:
    return numel(out), 0


@formula("linear")
def _linear(a: dict[str, Any], out: Any) -> Cost:
    return numel(out) * a["input"].shape[-1], bias_cost(a, out)


# -- convolutions ----------------------------------------------------------------
def _conv_macs(x: torch.Tensor, w: torch.Tensor, out_elems: int, transposed: bool) -> int:
    """MACs of a convolution.

    Regular: ``out_elems * (Cin/groups) * prod(kernel)``; weight is ``(Cout, Cin/g, *k)``.
    Transposed: ``in_elems * (Cout/groups) * prod(kernel)``; weight is ``(Cin, Cout/g, *k)``.
    """
    per_position = w.shape[1] * prod(w.shape[2:])
    return (x.numel() if transposed else out_elems) * per_position


@formula(
    "convolution",
    "_convolution",
    "convolution_overrideable",
    "cudnn_convolution",
    "cudnn_convolution_transpose",
    "mkldnn_convolution",
    "miopen_convolution",
    "miopen_convolution_transpose",
    "miopen_depthwise_convolution",
    "_slow_conv2d_forward",
    "slow_conv3d_forward",
    "slow_conv_transpose2d",
    "slow_conv_transpose3d",
    "_conv_depthwise2d",
    "conv_depthwise3d",
    "slow_conv_dilated2d",
    "slow_conv_dilated3d",
    "_nnpack_spatial_convolution",
)
def _conv(a: dict[str, Any], out: Any) -> Cost:
    x = a["input"] if "input" in a else a["self"]
    transposed = bool(a.get("transposed", "transpose" in a["_name"]))
    result = first(out)
    return _conv_macs(x, a["weight"], result.numel(), transposed), bias_cost(a, result)


@formula("convolution_backward", "convolution_backward_overrideable")
def _conv_backward(a: dict[str, Any], out: Any) -> Cost:
    """Input gradient and weight gradient each cost one forward convolution."""
    grad_out, x, w = a["grad_output"], a["input"], a["weight"]
    mask = a["output_mask"]
    forward = _conv_macs(x, w, grad_out.numel(), bool(a["transposed"]))
    return forward * (int(mask[0]) + int(mask[1])), grad_out.numel() if mask[2] else 0


# -- normalisation, softmax, pooling, losses ----------------------------------------
def _affine(a: dict[str, Any]) -> int:
    return int(a.get("weight") is not None) + int(a.get("bias") is not None)


@formula("native_layer_norm", "native_group_norm")
def _norm(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["input"].numel() * (NORM + _affine(a))


@formula(
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_functional",
    "cudnn_batch_norm",
    "miopen_batch_norm",
    "_batch_norm_with_update",
    "_batch_norm_with_update_functional",
    "_batch_norm_no_update",
    "_native_batch_norm_legit_no_training",
)
def _batch_norm(a: dict[str, Any], out: Any) -> Cost:
    training = a.get("training")
    if training is None:  # the op name says which
        training = "no_update" not in a["_name"] and "no_training" not in a["_name"]
    per = NORM if training else NORM_RUNNING_STATS
    return 0, a["input"].numel() * (per + _affine(a))


@formula("_fused_rms_norm")
def _rms_norm(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["input"].numel() * (RMS_NORM + int(a.get("weight") is not None))


@formula(
    "native_layer_norm_backward",
    "native_group_norm_backward",
    "native_batch_norm_backward",
    "cudnn_batch_norm_backward",
    "miopen_batch_norm_backward",
    "batch_norm_backward",
    "_fused_rms_norm_backward",
)
def _norm_backward(a: dict[str, Any], out: Any) -> Cost:
    base = RMS_NORM if "rms" in a["_name"] else NORM
    return 0, 2 * a["input"].numel() * (base + _affine(a))


@formula("_softmax", "_safe_softmax", "_log_softmax", "softmax", "log_softmax", "_masked_softmax")
def _softmax(a: dict[str, Any], out: Any) -> Cost:
    return 0, SOFTMAX * numel(out)


@formula("_softmax_backward_data", "_log_softmax_backward_data", "_masked_softmax_backward")
def _softmax_backward(a: dict[str, Any], out: Any) -> Cost:
    return 0, SOFTMAX_BACKWARD * numel(out)


def _expand(kernel: Any, dims: int) -> list[int]:
    ks = [int(kernel)] if isinstance(kernel, int) else [int(k) for k in kernel]
    return ks * dims if len(ks) == 1 else ks


@formula(
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "mkldnn_max_pool2d",
    "mkldnn_max_pool3d",
    "quantized_max_pool2d",
)
def _pool(a: dict[str, Any], out: Any) -> Cost:
    dims = int(a["_name"].split("pool")[1][0])
    return 0, first(out).numel() * prod(_expand(a["kernel_size"], dims))


@formula(
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
)
def _adaptive_pool(a: dict[str, Any], out: Any) -> Cost:
    return 0, numel(a["_input"])


@formula(
    "max_pool2d_with_indices_backward",
    "max_pool3d_with_indices_backward",
    "avg_pool2d_backward",
    "avg_pool3d_backward",
    "_adaptive_avg_pool2d_backward",
    "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward",
    "adaptive_max_pool3d_backward",
    "mkldnn_max_pool2d_backward",
    "mkldnn_max_pool3d_backward",
    "max_unpool2d",
    "max_unpool3d",
)
def _pool_backward(a: dict[str, Any], out: Any) -> Cost:
    return 0, numel(out)


@formula(
    "reflection_pad1d_backward",
    "reflection_pad2d_backward",
    "reflection_pad3d_backward",
    "replication_pad1d_backward",
    "replication_pad2d_backward",
    "replication_pad3d_backward",
)
def _pad_backward(a: dict[str, Any], out: Any) -> Cost:
    """The gradient of every padded element is added back to its source: one add each."""
    return 0, a["grad_output"].numel() - numel(out)


@formula("col2im")
def _col2im(a: dict[str, Any], out: Any) -> Cost:
    """``fold`` (and ``unfold``'s backward) adds every patch element into the image."""
    return 0, a["self"].numel()


def _upsample(per_element: int, backward: bool) -> Formula:
    def fn(a: dict[str, Any], out: Any) -> Cost:
        return 0, per_element * (a["grad_output"].numel() if backward else numel(out))

    return fn


for _mode, _per in UPSAMPLE.items():
    formula(f"upsample_{_mode}")(_upsample(_per, False))
    formula(f"upsample_{_mode}_backward")(_upsample(_per, True))
for _mode in ("bilinear2d", "bicubic2d"):  # anti-aliased variants exist for these two
    formula(f"_upsample_{_mode}_aa")(_upsample(UPSAMPLE[_mode], False))
    formula(f"_upsample_{_mode}_aa_backward")(_upsample(UPSAMPLE[_mode], True))
for _dims in ("1d", "2d", "3d"):
    formula(f"upsample_nearest{_dims}_backward", f"_upsample_nearest_exact{_dims}_backward")(
        _upsample(1, True)
    )


@formula(
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "soft_margin_loss",
    "kl_div",
    "multilabel_margin_loss_forward",
    "multi_margin_loss",
)
def _loss(a: dict[str, Any], out: Any) -> Cost:
    return 0, LOSS * a["self"].numel()


@formula(
    "mse_loss_backward",
    "smooth_l1_loss_backward",
    "huber_loss_backward",
    "binary_cross_entropy_backward",
    "soft_margin_loss_backward",
    "multilabel_margin_loss_backward",
    "multi_margin_loss_backward",
)
def _loss_backward(a: dict[str, Any], out: Any) -> Cost:
    return 0, LOSS_BACKWARD * numel(out)


@formula("nll_loss_forward", "nll_loss2d_forward", "nll_loss_backward", "nll_loss2d_backward")
def _nll(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["target"].numel()


@formula("_cdist_forward", "_cdist_backward")
def _cdist(a: dict[str, Any], out: Any) -> Cost:
    """Pairwise p-norm distances: difference, power and sum per pair and feature."""
    pairs = numel(a["cdist"]) if "cdist" in a else numel(out)
    return 0, 3 * pairs * int(a["x1"].shape[-1])


@formula("native_dropout")
def _dropout(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["input"].numel()


# -- lookups and scatters --------------------------------------------------------------
@formula("embedding_dense_backward")
def _embedding_backward(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["grad_output"].numel()


@formula("_embedding_bag", "_embedding_bag_forward_only")
def _embedding_bag(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["indices"].numel() * int(a["weight"].shape[-1])


@formula(
    "_embedding_bag_backward", "_embedding_bag_dense_backward", "_embedding_bag_sparse_backward"
)
def _embedding_bag_backward(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["indices"].numel() * int(a["grad"].shape[-1])


@formula("scatter_add", "scatter_reduce")
def _scatter_add(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["index"].numel()


@formula("index_add", "index_reduce")
def _index_add(a: dict[str, Any], out: Any) -> Cost:
    return 0, a["source"].numel()


LOOKUP_WITH_REDUCE = {
    "scatter": "reduce",
    "index_put": "accumulate",
    "_index_put_impl": "accumulate",
}
"""Lookups that become reductions when the named argument is set."""


@formula("_unsafe_masked_index_put_accumulate")
def _scatter_like(a: dict[str, Any], out: Any) -> Cost:
    """``scatter(reduce=...)`` and accumulating ``index_put``: one op per source element."""
    if a["_name"] == "scatter":
        return 0, a["index"].numel()
    return 0, numel(a["values"])


Tracker = Callable[[Sequence[Any], dict[str, Any], Any], None]

TRACKERS: dict[str, Tracker] = {"_nested_tensor_from_mask": remember_padding}
"""Zero-cost operators whose results formulas need later: ``tracker(args, kwargs, out)``
records it (the padded shape of a nested tensor; see :mod:`.flop_attention`)."""


# ---------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------
class OpInfo:
    """How one ``OpOverload`` is treated: ``kind`` is formula/lookup/zero/unknown."""

    __slots__ = ("arg_names", "defaults", "display", "fn", "kind", "name", "track")

    def __init__(self, func: Any) -> None:
        schema = func._schema
        namespace, _, base = schema.name.partition("::")
        if base.endswith("_") and not base.endswith("__"):
            base = base[:-1]  # in-place variant: add_ -> add
        self.name = base if namespace == "aten" else f"{namespace}::{base}"
        self.display = f"{namespace}.{base}"
        self.arg_names = [arg.name for arg in schema.arguments]
        self.defaults = {
            arg.name: arg.default_value for arg in schema.arguments if arg.has_default_value()
        }
        self.fn: Formula | None = None
        self.track = TRACKERS.get(base) if namespace == "aten" else None
        if namespace in ("aten", "prim") and base in ZERO_COST:
            self.kind = "zero"
        elif namespace != "aten":
            self.kind = "unknown"
        elif base in LOOKUP_WITH_REDUCE:
            self.kind = "maybe_lookup"
            self.fn = _scatter_like
        elif base in LOOKUPS:
            self.kind = "lookup"
        elif base in FORMULAS:
            self.kind, self.fn = "formula", FORMULAS[base]
        elif base in ELEMENTWISE:
            self.kind, self.fn = "formula", elementwise
        elif base in REDUCTIONS:
            self.kind, self.fn = "formula", reduction
        else:
            self.kind = "unknown"

    def bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments by schema name (defaults filled in) plus ``_name``."""
        bound = dict(zip(self.arg_names, args))
        bound.update(kwargs)
        for key, value in self.defaults.items():
            bound.setdefault(key, value)
        bound["_name"] = self.name
        bound["_input"] = args[0] if args else kwargs.get(self.arg_names[0])
        return bound

    def cost(self, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> tuple[str, Cost]:
        """``(kind, (macs, other))`` for one call: kind is formula, lookup or zero."""
        if self.kind == "maybe_lookup":
            bound = self.bind(args, kwargs)
            if bound.get(LOOKUP_WITH_REDUCE[self.name]):
                return "formula", _scatter_like(bound, out)
            return "lookup", (0, 0)
        if self.fn is None:
            return self.kind, (0, 0)
        macs, other = self.fn(self.bind(args, kwargs), out)
        return "formula", (int(macs), int(other))


_CACHE: dict[Any, OpInfo] = {}


def classify(func: Any) -> OpInfo:
    """The (cached) :class:`OpInfo` of an ``OpOverload``."""
    info = _CACHE.get(func)
    if info is None:
        info = _CACHE[func] = OpInfo(func)
    return info


def op_display_name(func: Any) -> str:
    """``aten.mm`` style name of an ``OpOverload`` (in-place suffix dropped)."""
    return classify(func).display
