"""Each deliberately broken module fails exactly the check that catches its bug, with a reason."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from netarchitect.testing import check_module


def broken(base, forward=None, **attrs):
    """A subclass of ``base`` with ``forward`` and extra class attributes replaced."""
    body = dict(attrs)
    if forward is not None:
        body["forward"] = forward
    return type(f"Broken{base.__name__}", (base,), body)


def run(cls, x, **kwargs):
    return check_module(functools.partial(cls, 4, 3), x, raise_on_failure=False, **kwargs)


@pytest.fixture
def unused_param_cls(tiny_mlp_cls):
    class Unused(tiny_mlp_cls):
        def __init__(self, *args, device=None, dtype=None, **kw):
            super().__init__(*args, device=device, dtype=dtype, **kw)
            self.forgotten = nn.Parameter(torch.ones(2, device=device, dtype=dtype))

    return Unused


def test_unused_parameter_fails_gradients_and_names_it(unused_param_cls, x):
    report = run(unused_param_cls, x)
    assert report.failed == ["gradients"]
    assert "forgotten" in report["gradients"].reason
    assert "no gradient" in report["gradients"].reason


def test_zero_and_nonfinite_gradients_are_named(unused_param_cls, x):
    def forward(self, x):
        out = self.fc2(self.body(x))
        # d/db sqrt(|b|) at b = 0 is not finite; 0 * forgotten gives an all-zero gradient
        return out + 0 * self.forgotten.sum() + torch.sqrt(self.norm.bias.abs().sum())

    report = run(broken(unused_param_cls, forward), x, checks=["gradients"])
    reason = report["gradients"].reason
    assert "all-zero gradient: forgotten" in reason
    assert "non-finite gradient: norm.bias" in reason


def test_detached_output_fails_gradients(tiny_mlp_cls, x):
    report = run(
        broken(tiny_mlp_cls, lambda self, x: self.fc2(self.body(x)).detach()),
        x,
        checks=["gradients"],
    )
    assert "do not require grad" in report["gradients"].reason


def test_batch_mixing_fails_batch_independence(tiny_mlp_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x))
        return y - y.mean(0, keepdim=True)

    report = run(broken(tiny_mlp_cls, forward), x)
    assert report.failed == ["batch_independence"]
    assert "mixes samples" in report["batch_independence"].reason


def test_nondeterministic_module_fails_determinism(tiny_mlp_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x))
        return y + 1e-3 * torch.rand_like(y)

    report = run(broken(tiny_mlp_cls, forward), x)
    assert "determinism" in report.failed
    assert "two identical calls" in report["determinism"].reason
    assert {"output_shape", "finite", "gradients", "meta", "repr"} <= set(report.passed)


def test_nan_output_fails_finite(tiny_mlp_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x))
        return y.index_fill(-1, torch.tensor([0], device=y.device), float("nan"))

    report = run(broken(tiny_mlp_cls, forward), x)
    assert report.failed == ["finite"]
    assert "5 NaN" in report["finite"].reason


def test_ignoring_device_fails_meta(x):
    class NoDevice(nn.Module):
        def __init__(self, a, b, *, device=None, dtype=None):
            super().__init__()
            self.fc = nn.Linear(a, b)

        def forward(self, x):
            return self.fc(x)

    report = run(NoDevice, x)
    assert report.failed == ["meta"]
    assert "fc.weight" in report["meta"].reason and "device=" in report["meta"].reason


def test_ignoring_dtype_fails_meta(x):
    class NoDtype(nn.Module):
        def __init__(self, a, b, *, device=None, dtype=None):
            super().__init__()
            self.fc = nn.Linear(a, b, device=device)

        def forward(self, x):
            return self.fc(x)

    report = run(NoDtype, x, checks=["meta"])
    assert "dtype=" in report["meta"].reason and "fc.bias" in report["meta"].reason


def test_meta_forward_failure_and_shape_mismatch(tiny_mlp_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x))
        return y[: int(y.sum() > 0) + 1]  # data-dependent: cannot run on meta

    report = run(broken(tiny_mlp_cls, forward), x, checks=["meta"])
    assert "meta device" in report["meta"].reason

    class Grows(tiny_mlp_cls):
        def __init__(self, *args, device=None, **kw):
            super().__init__(*args, device=device, **kw)
            if str(device) == "meta":
                self.extra = nn.Parameter(torch.zeros(1, device=device))

    assert "parameter" in run(Grows, x, checks=["meta"])["meta"].reason


def test_unsaved_buffer_fails_state_dict_roundtrip(tiny_mlp_cls, x):
    class Unsaved(tiny_mlp_cls):
        def __init__(self, *args, device=None, dtype=None, **kw):
            super().__init__(*args, device=device, dtype=dtype, **kw)
            self.register_buffer(
                "scale", torch.randn(3, device=device, dtype=dtype), persistent=False
            )

        def forward(self, x):
            return super().forward(x) * self.scale

    report = run(Unsaved, x)
    assert report.failed == ["state_dict_roundtrip"]
    assert "state_dict" in report["state_dict_roundtrip"].reason


def test_shared_weights_roundtrip(tiny_mlp_cls, x):
    class Tied(tiny_mlp_cls):
        def __init__(self, *args, **kw):
            super().__init__(4, 4, hidden=4, **kw)
            self.fc2.weight = self.fc1.weight

    report = check_module(Tied, x, checks=["state_dict_roundtrip"])
    assert report.passed == ["state_dict_roundtrip"]


def test_extra_state_is_skipped_by_roundtrip(tiny_mlp_cls, x):
    class Extra(tiny_mlp_cls):
        def get_extra_state(self):
            return {"version": 2}

        def set_extra_state(self, state):
            pass

    report = check_module(functools.partial(Extra, 4, 3), x, checks=["state_dict_roundtrip"])
    assert "non-tensor" in report["state_dict_roundtrip"].reason


def test_wrong_checkpointed_path_fails_grad_checkpointing(checkpointed_cls, x):
    def forward(self, x):
        h = self.body(x)
        return self.fc2(2 * h if self.grad_checkpointing else h)

    report = run(broken(checkpointed_cls, forward), x)
    assert report.failed == ["grad_checkpointing"]
    assert "checkpointing" in report["grad_checkpointing"].reason


def test_wrong_checkpointed_gradient_fails(checkpointed_cls, x):
    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h):
            return h.clone()

        @staticmethod
        def backward(ctx, g):
            return 3 * g

    def forward(self, x):
        h = self.body(x)
        return self.fc2(Scale.apply(h) if self.grad_checkpointing else h)

    report = run(broken(checkpointed_cls, forward), x, checks=["grad_checkpointing"])
    assert "gradient of 'fc1.weight'" in report["grad_checkpointing"].reason


def test_float32_only_module_fails_float64(tiny_mlp_cls, x):
    report = run(broken(tiny_mlp_cls, lambda self, x: self.fc2(self.body(x)).float()), x)
    assert report.failed == ["float64"]
    assert "torch.float32" in report["float64"].reason


def test_float64_mismatch(tiny_mlp_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x))
        return y + (x.dtype == torch.float64)

    assert "float32" in run(broken(tiny_mlp_cls, forward), x, checks=["float64"])["float64"].reason


def test_batch_dim_lost_fails_output_shape(tiny_mlp_cls, x):
    report = run(broken(tiny_mlp_cls, lambda self, x: self.fc2(self.body(x)).sum(0)), x)
    assert "output_shape" in report.failed
    assert "batch dim 5" in report["output_shape"].reason


def test_no_tensor_output_and_changing_shape(tiny_mlp_cls, x):
    report = run(broken(tiny_mlp_cls, lambda self, x: "text"), x, checks=["output_shape"])
    assert "no tensors" in report["output_shape"].reason and "str" in report["output_shape"].reason

    class Grows(tiny_mlp_cls):
        calls = 0

        def forward(self, x):
            self.calls += 1
            return torch.zeros(5, self.calls)

    assert "changed" in run(Grows, x, checks=["output_shape"])["output_shape"].reason


def test_train_eval_failures(tiny_mlp_cls, x):
    def shallow_train(self, mode=True):
        self.training = mode
        return self

    report = run(broken(tiny_mlp_cls, train=shallow_train), x, checks=["train_eval"])
    assert "eval() left fc1, norm, drop, fc2 in training mode" in report["train_eval"].reason

    def fusing_eval(self, mode=True):
        nn.Module.train(self, mode)
        if not mode:
            with torch.no_grad():
                self.fc1.weight.mul_(2)
        return self

    report = run(broken(tiny_mlp_cls, train=fusing_eval), x, checks=["train_eval"])
    assert "eval() changed fc1.weight" in report["train_eval"].reason

    def half_eval(self, mode=True):
        nn.Module.train(self, mode)
        self.drop.training = True
        return self

    report = run(broken(tiny_mlp_cls, train=half_eval), x, checks=["train_eval"])
    assert "eval() left drop in training mode" in report["train_eval"].reason

    def half_train(self, mode=True):
        nn.Module.train(self, mode)
        self.norm.training = False
        return self

    report = run(broken(tiny_mlp_cls, train=half_train), x, checks=["train_eval"])
    assert "train() left norm in eval mode" in report["train_eval"].reason


def test_random_in_eval_fails_train_eval(tiny_mlp_cls, x):
    def forward(self, x):
        return self.fc2(self.body(x)) + torch.rand(1)

    report = run(broken(tiny_mlp_cls, forward), x, checks=["train_eval"])
    assert "different RNG seeds" in report["train_eval"].reason


def test_repr_that_raises(tiny_mlp_cls, x):
    def extra_repr(self):
        raise RuntimeError("boom")

    report = run(broken(tiny_mlp_cls, extra_repr=extra_repr), x, checks=["repr"])
    assert report["repr"].reason == "RuntimeError: boom"


def test_bf16_mismatch(tiny_mlp_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x))
        return y + 10 * torch.is_autocast_enabled("cpu")

    report = run(broken(tiny_mlp_cls, forward), x, checks=["bf16_autocast"])
    assert "autocast" in report["bf16_autocast"].reason


def test_wrong_backward_fails_gradcheck(x):
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h):
            return h * 2

        @staticmethod
        def backward(ctx, g):
            return g

    class Doubler(nn.Module):
        def forward(self, x):
            return Wrong.apply(x)

    report = check_module(Doubler, x[:2], checks=["gradcheck"], raise_on_failure=False)
    assert report.failed == ["gradcheck"] and "Jacobian" in report["gradcheck"].reason


def test_check_module_raises_listing_every_failure(tiny_mlp_cls, unused_param_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x)) * float("nan")
        return y - y.mean(0)

    with pytest.raises(AssertionError) as info:
        check_module(functools.partial(broken(unused_param_cls, forward), 4, 3), x)
    message = str(info.value)
    assert "gradients:" in message and "finite:" in message
    assert "failed 2 conformance checks" in message
    assert info.value.report.failed == ["finite", "gradients"]


def test_nan_buffer_is_not_a_change_in_train_eval(tiny_mlp_cls, x):
    class Padded(tiny_mlp_cls):
        def __init__(self, *args, device=None, dtype=None, **kw):
            super().__init__(*args, device=device, dtype=dtype, **kw)
            self.register_buffer("pad", torch.full((2,), float("nan"), device=device))

    assert run(Padded, x, checks=["train_eval"]).passed == ["train_eval"]


def test_inputs_on_another_device_build_there(x):
    report = check_module(functools.partial(nn.Linear, 4, 2), x.to("meta"), checks="output_shape")
    assert report.passed == ["output_shape"]


def test_empty_repr_and_changing_output_count(tiny_mlp_cls, x):
    report = run(broken(tiny_mlp_cls, __repr__=lambda self: " "), x, checks=["repr"])
    assert report["repr"].reason == "repr(module) is ' '"

    def forward(self, x):
        y = self.fc2(self.body(x))
        return (y,) if len(x) > 1 else (y, y)

    report = run(broken(tiny_mlp_cls, forward), x, checks=["batch_independence"])
    assert "sample 0 alone gives 2 outputs, the batch 1" in report["batch_independence"].reason


def test_integer_output_skips_gradients(tiny_mlp_cls, x):
    report = run(broken(tiny_mlp_cls, lambda self, x: self.fc2(self.body(x)).argmax(-1)), x)
    assert "no floating-point output" in report["gradients"].reason


def test_parameter_unused_only_with_checkpointing(checkpointed_cls, unused_param_cls, x):
    class Both(checkpointed_cls, unused_param_cls):
        def forward(self, x):
            y = checkpointed_cls.forward(self, x)
            return y if self.grad_checkpointing else y + 0 * self.forgotten.sum()

    report = run(Both, x, checks=["grad_checkpointing"])
    assert "'forgotten' is None only with checkpointing" in report["grad_checkpointing"].reason


def test_meta_output_shape_mismatch(tiny_mlp_cls, x):
    def forward(self, x):
        y = self.fc2(self.body(x))
        return y[:1] if y.device.type == "meta" else y

    assert (
        "output shapes on meta"
        in run(broken(tiny_mlp_cls, forward), x, checks=["meta"])["meta"].reason
    )


@pytest.mark.slow
def test_compile_mismatch_fails_compile(tiny_mlp_cls, x):
    def forward(self, x):
        return self.fc2(self.body(x)) + torch.compiler.is_compiling()

    report = run(broken(tiny_mlp_cls, forward), x, checks=["compile"])
    assert "compiled outputs differ" in report["compile"].reason
