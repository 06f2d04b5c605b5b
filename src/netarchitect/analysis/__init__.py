"""Analysis tools that work on any ``nn.Module``: parameters, FLOPs, memory, latency,
scaling, per-module summaries and the gradient-flow doctor.

Every tool accepts ``inputs`` as a tensor, a tuple/list of positional inputs or a dict
of keyword inputs. Parameter, FLOP, memory and summary analysis also run on the
``meta`` device, so a model far larger than RAM can be measured without weights.
"""

from .attention_maps import attention_maps, attention_rollout, recording_attention
from .attribution import (
    AttributionError,
    IGResult,
    grad_cam,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from .commands import doctor_command, inspect_command, make_inputs, parse_input_shape
from .doctor import (
    THRESHOLDS,
    ActivationStat,
    DoctorReport,
    Flag,
    LayerGrad,
    NonFinite,
    default_loss,
    diagnose,
)
from .flop_formulas import attention_cost
from .flops import Count, FlopCounter, FlopResult, count_flops
from .latency import LatencyReport, Timing, latency
from .memory import MemoryReport, memory, trace_activations
from .params import ParamCount, count_params
from .plots import plot_gradient_flow, plot_scaling
from .scaling import ScalingReport, fit_exponent, scaling
from .summary import SummaryRow, SummaryTable, summary

__all__ = [
    "THRESHOLDS",
    "ActivationStat",
    "AttributionError",
    "Count",
    "DoctorReport",
    "Flag",
    "FlopCounter",
    "FlopResult",
    "IGResult",
    "LatencyReport",
    "LayerGrad",
    "MemoryReport",
    "NonFinite",
    "ParamCount",
    "ScalingReport",
    "SummaryRow",
    "SummaryTable",
    "Timing",
    "attention_cost",
    "attention_maps",
    "attention_rollout",
    "count_flops",
    "count_params",
    "default_loss",
    "diagnose",
    "doctor_command",
    "fit_exponent",
    "grad_cam",
    "inspect_command",
    "integrated_gradients",
    "latency",
    "make_inputs",
    "memory",
    "parse_input_shape",
    "plot_gradient_flow",
    "plot_scaling",
    "recording_attention",
    "saliency",
    "scaling",
    "smoothgrad",
    "summary",
    "trace_activations",
]
