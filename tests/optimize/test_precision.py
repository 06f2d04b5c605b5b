"""optimize.precision: the autocast policy, fp16 gradient scaling, the bf16 probe and the
per-block bf16/fp16 conformance check over the whole registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.optimize.precision import (
    EXACT_TOLERANCE,
    KIND_TOLERANCE_EPS,
    NATIVE_BF16_RATIO,
    BF16Support,
    active_policy,
    autocast_policy,
    bf16_support,
    bf16_supported,
    check_precision,
    make_grad_scaler,
    precision_kind,
    resolve_dtype,
    scaled_step,
    tolerance_for,
)
from netarchitect.registry import block_examples, get_block, list_blocks

LOW = [torch.bfloat16, torch.float16]

SENSITIVE = {
    "softmax": lambda y: y.softmax(-1),
    "F.softmax": lambda y: F.softmax(y, dim=-1),
    "log_softmax": lambda y: F.log_softmax(y, dim=-1),
    "layer_norm": lambda y: F.layer_norm(y, (y.shape[-1],)),
    "rms_norm": lambda y: F.rms_norm(y, (y.shape[-1],)),
    "group_norm": lambda y: F.group_norm(y, 2),
    "batch_norm": lambda y: F.batch_norm(y, None, None, training=True),
    "logsumexp": lambda y: torch.logsumexp(y, -1),
    "vector_norm": lambda y: torch.linalg.vector_norm(y, dim=-1),
    "cross_entropy": lambda y: F.cross_entropy(y, torch.zeros(y.shape[0], dtype=torch.long)),
}


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(8, 4)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("op", sorted(SENSITIVE))
def test_sensitive_ops_run_in_float32_after_a_low_precision_matmul(linear, dtype, op):
    x = torch.randn(6, 8)
    with autocast_policy(dtype, device_type="cpu"):
        y = linear(x)
        out = SENSITIVE[op](y)
    assert y.dtype == dtype  # the matmul itself is low precision
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, SENSITIVE[op](y.float()), rtol=0, atol=0)


def test_plain_cpu_autocast_leaves_softmax_and_layer_norm_in_bf16(linear):
    """Why the policy exists: torch.autocast's CPU tables do not list them."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = linear(torch.randn(6, 8))
        assert y.softmax(-1).dtype == torch.bfloat16
        assert F.layer_norm(y, (4,)).dtype == torch.bfloat16


def test_disabled_policy_is_float32_and_yields_none(linear):
    with autocast_policy("bf16", device_type="cpu", enabled=False) as mode:
        assert mode is None
        assert linear(torch.randn(2, 8)).dtype == torch.float32


def test_policy_counts_matmul_calls_and_defaults_to_default_device(linear):
    with autocast_policy("bf16") as mode:
        linear(torch.randn(2, 8)).softmax(-1)
    assert mode.low_precision_calls == 1 and mode.fp32_calls == 1


def test_gradients_flow_in_float32_through_the_policy(linear):
    x = torch.randn(6, 8)
    with autocast_policy("bf16", device_type="cpu"):
        loss = F.log_softmax(linear(x), -1).mean()
    loss.backward()
    assert linear.weight.grad.dtype == torch.float32
    ref = nn.Linear(8, 4)
    ref.load_state_dict(linear.state_dict())
    F.log_softmax(ref(x), -1).mean().backward()
    torch.testing.assert_close(linear.weight.grad, ref.weight.grad, rtol=0.05, atol=5e-3)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16), ("fp16", torch.float16),
     ("half", torch.float16), (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16)],
)  # fmt: skip
def test_resolve_dtype(given, expected):
    assert resolve_dtype(given) is expected


@pytest.mark.parametrize("bad", ["fp32", "int8", torch.float32, 16, None])
def test_bad_dtype_is_a_spec_error(bad):
    with pytest.raises(SpecError, match="dtype") as err, autocast_policy(bad):
        pass
    assert isinstance(err.value, NetArchitectError) and err.value.path == "dtype"


def test_bad_device_type_is_a_spec_error():
    with pytest.raises(SpecError, match="'tpu'"), autocast_policy("bf16", device_type="tpu"):
        pass


# ---------------------------------------------------------------- grad scaler


def test_grad_scaler_is_enabled_for_fp16_only():
    assert make_grad_scaler("fp16", device_type="cpu").is_enabled()
    assert not make_grad_scaler("bf16", device_type="cpu").is_enabled()
    assert make_grad_scaler(init_scale=8.0).get_scale() == 8.0


def _fp16_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with autocast_policy("fp16", device_type="cpu"):
        return F.mse_loss(model(x), torch.zeros(x.shape[0], 4))


def test_scaled_step_takes_a_finite_step(linear):
    opt = torch.optim.SGD(linear.parameters(), lr=0.1)
    scaler = make_grad_scaler("fp16", device_type="cpu", init_scale=2.0**8, growth_interval=1)
    before = linear.weight.detach().clone()
    assert scaled_step(_fp16_loss(linear, torch.randn(6, 8)), opt, scaler)
    assert not torch.equal(linear.weight, before)
    assert linear.weight.grad is None and scaler.get_scale() == 2.0**9


def test_scaled_step_skips_an_overflowing_step_and_lowers_the_scale(linear):
    opt = torch.optim.SGD(linear.parameters(), lr=0.1)
    scaler = make_grad_scaler("fp16", device_type="cpu", init_scale=2.0**16)
    before = linear.weight.detach().clone()
    x = torch.full((6, 8), 1e3)  # fp16 overflow in the scaled backward
    assert not scaled_step(_fp16_loss(linear, x), opt, scaler)
    assert torch.equal(linear.weight, before)
    assert scaler.get_scale() < 2.0**16


def test_scaled_step_with_a_disabled_scaler_is_a_plain_step(linear):
    opt = torch.optim.SGD(linear.parameters(), lr=0.1)
    with autocast_policy("bf16", device_type="cpu"):
        loss = linear(torch.randn(6, 8)).float().pow(2).mean()
    before = linear.weight.detach().clone()
    assert scaled_step(loss, opt, make_grad_scaler("bf16", device_type="cpu"))
    assert not torch.equal(linear.weight, before)


# ---------------------------------------------------------------- bf16 probe


def test_bf16_probe_records_capability_and_timing():
    support = bf16_support(size=64)
    assert isinstance(support, BF16Support)
    assert support.capability == torch.backends.cpu.get_cpu_capability()
    assert support.bf16_over_fp32 is not None and support.bf16_over_fp32 > 0
    assert support.native == (support.bf16_over_fp32 <= NATIVE_BF16_RATIO)
    assert set(support.to_dict()) >= {"native", "capability", "cpu_flags", "bf16_over_fp32"}


def test_bf16_without_probe_trusts_the_cpu_flags():
    support = bf16_support(probe=False)
    assert support.bf16_over_fp32 is None
    assert support.native == any(f in support.cpu_flags for f in ("avx512_bf16", "amx_bf16"))
    assert bf16_supported(probe=False) == support.native


def test_bf16_support_on_cuda_follows_torch_cuda():
    support = bf16_support("cuda")
    expected = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert support.native == expected and support.device_type == "cuda"


# ---------------------------------------------------------------- conformance check


def _block_cases() -> list:
    cases = []
    for name in list_blocks():
        for i, ex in enumerate(block_examples(get_block(name))):
            for dtype in ("bf16", "fp16"):
                cases.append(pytest.param(name, ex, dtype, id=f"{name}-{ex.name or i}-{dtype}"))
    return cases


@pytest.mark.parametrize(("name", "ex", "dtype"), _block_cases())
def test_every_registered_block_is_within_its_kind_tolerance(name, ex, dtype):
    torch.manual_seed(0)
    block = get_block(name)(**ex.kwargs)
    report = check_precision(block, ex.inputs, dtype, forward_kwargs=ex.forward_kwargs)
    assert report.name == name
    assert report.passed, str(report)


class _Bf16Leak(nn.Module):
    """Rounds to bf16 by hand under autocast (no matmul-like op): held to the exact tolerance."""

    def forward(self, x):
        return x.to(torch.bfloat16).float() if torch.is_autocast_enabled("cpu") else x


class _Quantised(nn.Module):
    """Returns integer codes of a matmul output: bf16 rounding changes some of them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        y = self.fc(x)
        return y, torch.round(y.float() * 1000).long()


def test_check_precision_fails_a_hand_rounded_block():
    report = check_precision(_Bf16Leak(), torch.randn(4, 16), "bf16")
    assert report.kind == "elementwise" and report.tolerance == EXACT_TOLERANCE
    assert not report.passed and report.rel_error > 1e-3
    assert "FAIL" in str(report) and "_Bf16Leak" in str(report)


def test_check_precision_reports_changed_integer_outputs():
    torch.manual_seed(0)
    report = check_precision(_Quantised(), torch.randn(8, 16), "bf16")
    assert report.kind == "gemm" and report.mismatched_exact == 1
    assert not report.passed and "non-float outputs differ" in str(report)


def test_check_precision_leaves_the_module_as_it_was(linear):
    linear.train()
    state = {k: v.clone() for k, v in linear.state_dict().items()}
    report = check_precision(linear, (torch.randn(3, 8),), torch.bfloat16)
    assert linear.training and report.passed and report.dtype == "bfloat16"
    for key, value in linear.state_dict().items():
        assert torch.equal(value, state[key])
    assert "ok" in str(report)


def test_check_precision_overrides_and_keyword_inputs(linear):
    report = check_precision(
        linear, {"input": torch.randn(3, 8)}, "fp16", kind="composite", tolerance=0.5, name="x"
    )
    assert (report.name, report.kind, report.tolerance) == ("x", "composite", 0.5)
    assert report.passed


def test_check_precision_of_an_all_zero_output_uses_the_absolute_error():
    report = check_precision(nn.Identity(), torch.zeros(3), "bf16")
    assert report.rel_error == 0.0 and report.passed


def test_check_precision_without_tensor_inputs_defaults_to_cpu():
    class Const(nn.Module):
        def forward(self, n: int):
            return torch.ones(n)

    assert check_precision(Const(), (3,), "bf16").passed


@pytest.mark.parametrize(
    ("name", "low", "fp32", "kind"),
    [("moe", 5, 1, "routing"), ("x", 0, 0, "elementwise"), ("x", 0, 2, "norm"),
     ("x", 1, 3, "gemm"), ("x", 2, 0, "composite")],
)  # fmt: skip
def test_precision_kind(name, low, fp32, kind):
    assert precision_kind(name, low, fp32) == kind


def test_tolerances_are_multiples_of_machine_epsilon():
    assert tolerance_for("gemm", torch.bfloat16) == 2.0**-7
    assert tolerance_for("composite", torch.float16) == KIND_TOLERANCE_EPS["composite"] * 2.0**-10
    assert tolerance_for("norm", torch.bfloat16) == EXACT_TOLERANCE


class _MoreOutputsUnderAutocast(nn.Module):
    def forward(self, x):
        return (x, x) if torch.is_autocast_enabled("cpu") else x


def test_an_output_structure_that_changes_under_autocast_is_a_bug_not_a_user_error():
    with pytest.raises(RuntimeError, match="number of outputs: 1 -> 2"):
        check_precision(_MoreOutputsUnderAutocast(), torch.randn(2), "bf16")


def test_active_policy_tracks_the_innermost_context():
    assert active_policy() is None
    with autocast_policy("bf16", device_type="cpu") as outer:
        assert active_policy() is outer
        with autocast_policy("fp16", device_type="cpu") as inner:
            assert active_policy() is inner
            replay = inner.replay()
            assert replay is not inner and replay.fp32_ops == inner.fp32_ops
        assert active_policy() is outer
    assert active_policy() is None
