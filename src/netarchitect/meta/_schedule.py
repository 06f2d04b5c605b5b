"""Learning-rate schedules shared by the meta-training loops."""

from __future__ import annotations

import math

import torch

from netarchitect.meta.errors import FewShotError

SCHEDULES = ("constant", "cosine")


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``constant``, or ``cosine``: the learning rate decays as ``½(1 + cos(π·step/steps))``."""
    if schedule not in SCHEDULES:
        raise FewShotError("schedule", f"{schedule!r} is not one of {', '.join(SCHEDULES)}")
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
