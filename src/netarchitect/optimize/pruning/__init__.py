"""Pruning: unstructured magnitude pruning made permanent, and structured pruning of
channels, attention heads and hidden units that emits a new, smaller, valid spec."""

from ._common import PruneError, check_amount
from .api import PruneResult, cost_table, finetuner, prune
from .dependency import ChannelGraph, Dim, RuleContext, build_graph, register_rule
from .importance import CRITERIA, group_scores
from .structured import GroupPlan, PrunePlan, apply_plan, plan_pruning, zero_pruned
from .unstructured import SparsityReport, prune_unstructured, sparsity

__all__ = [
    "CRITERIA",
    "ChannelGraph",
    "Dim",
    "GroupPlan",
    "PruneError",
    "PrunePlan",
    "PruneResult",
    "RuleContext",
    "SparsityReport",
    "apply_plan",
    "build_graph",
    "check_amount",
    "cost_table",
    "finetuner",
    "group_scores",
    "plan_pruning",
    "prune",
    "prune_unstructured",
    "register_rule",
    "sparsity",
    "zero_pruned",
]
