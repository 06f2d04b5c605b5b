"""``check_module``: run the conformance checks over a module and report every outcome."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from ..registry import Example
from . import checks_forward, checks_grad, checks_numeric, checks_state  # noqa: F401 (register)
from ._context import CheckContext
from ._registry import Check, CheckFailure, SkipCheck, select_checks, validate_names
from .report import CheckResult, ConformanceReport

__all__ = ["assert_conformance", "check_module"]

ModuleOrFactory = nn.Module | Callable[..., nn.Module]


def _run(check: Check, ctx: CheckContext, skip: Mapping[str, str]) -> CheckResult:
    if check.name in skip:
        return CheckResult(check.name, "skipped", skip[check.name])
    start = time.perf_counter()
    try:
        check.fn(ctx)
        status, reason = "passed", ""
    except SkipCheck as err:
        status, reason = "skipped", str(err)
    except CheckFailure as err:
        status, reason = "failed", str(err)
    except Exception as err:  # noqa: BLE001 -- a crash is a failure of the module, with its error
        status, reason = "failed", f"{type(err).__name__}: {err}"
    return CheckResult(check.name, status, reason, time.perf_counter() - start)  # type: ignore[arg-type]


def check_module(
    module_or_factory: ModuleOrFactory,
    example_inputs: Any,
    *,
    checks: str | Iterable[str] | None = None,
    atol: float = 1e-5,
    rtol: float = 1.3e-6,
    skip: Mapping[str, str] | None = None,
    slow: bool = False,
    raise_on_failure: bool = True,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> ConformanceReport:
    """Run the conformance checks over a module and return the report.

    Args:
        module_or_factory: an ``nn.Module``, or a callable taking ``device=``/``dtype=`` and
            returning a fresh one (``functools.partial(Block, 64, num_heads=4)``); copies are
            built under ``torch.manual_seed``. Checks that need a factory (``meta``,
            ``state_dict_roundtrip``) are skipped for an instance, which is never modified.
        example_inputs: a tensor or a tuple of positional inputs (non-tensors passed through).
        forward_kwargs: keyword arguments of every forward call (``is_causal=True``); keep
            them free of per-sample tensors (batch independence slices only the inputs).
        checks: names to run (see :func:`available_checks`); default: every fast check, plus
            ``compile`` and ``gradcheck`` when ``slow``.
        atol, rtol: tolerances of exact-math comparisons (batch independence, checkpointing).
        skip: check name -> reason it does not apply.
        raise_on_failure: after running every check, raise ``AssertionError`` listing each
            failure (``name: reason``) if any failed.

    Raises:
        ValueError: an unknown check name in ``checks`` or ``skip``.
        TypeError: ``module_or_factory`` is neither a module nor a factory returning one.
    """
    selected = select_checks(checks, slow)
    skip = dict(skip or {})
    validate_names(skip, "skip")
    ctx = CheckContext(
        module_or_factory, example_inputs, atol=atol, rtol=rtol, forward_kwargs=dict(forward_kwargs or {})
    )
    report = ConformanceReport(ctx.subject, [_run(c, ctx, skip) for c in selected])
    if raise_on_failure:
        report.raise_for_failures()
    return report


def assert_conformance(
    module_or_factory: ModuleOrFactory, example_inputs: Any, **kwargs: Any
) -> ConformanceReport:
    """:func:`check_module` for tests; ``example_inputs`` may be a registry ``Example``
    (then ``module_or_factory`` is the class, built with the example's kwargs, and the
    example's ``skip`` entries are added)."""
    __tracebackhide__ = True
    if isinstance(example_inputs, Example):
        module_or_factory = functools.partial(module_or_factory, **example_inputs.kwargs)
        kwargs["skip"] = {**example_inputs.skip, **kwargs.get("skip", {})}
        example_inputs = example_inputs.inputs
    return check_module(module_or_factory, example_inputs, raise_on_failure=True, **kwargs)
