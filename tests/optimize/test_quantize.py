"""Int8 quantisation: accuracy, agreement, generation, safetensors round trip, bad input."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torchao  # noqa: F401  (import once here: its import prints noise, warns nothing later)
from safetensors import safe_open
from sklearn.datasets import load_digits
from torch import nn

from netarchitect import create_model
from netarchitect.errors import NetArchitectError
from netarchitect.generation import generate
from netarchitect.layers.basic import Linear
from netarchitect.optimize import quantization as q
from netarchitect.optimize.quantization import (
    QuantizationError,
    default_backend,
    load_quantized,
    output_tensor,
    quantization_report,
    quantize,
    quantized_linears,
    quantized_size_bytes,
    save_quantized,
)
from netarchitect.weights import save_weights

#: (mode, backend): every combination that exists.
COMBOS = [("int8_dynamic", "legacy"), ("int8_dynamic", "torchao"), ("int8_weight_only", "torchao")]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key


def mlp() -> nn.Module:
    return nn.Sequential(Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


@pytest.fixture(scope="module")
def digits():
    """A small MLP (ours + nn.Linear) trained on sklearn's digits for ~1 s, and a test split."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):  # full batch
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[train]), y[train]).backward()
        opt.step()
    return model.eval(), x[test], y[test]


@pytest.mark.parametrize(("mode", "backend"), COMBOS)
def test_digits_accuracy_within_one_point(digits, mode, backend):
    model, x, y = digits
    before = snapshot(model)
    quantized = quantize(model, mode, backend=backend)
    report = quantization_report(model, quantized, x, labels=y, repeats=2, warmup=0)
    assert report.accuracy_before > 90
    assert abs(report.accuracy_after - report.accuracy_before) <= 1.0
    assert report.cosine > 0.999
    assert report.size_ratio < 0.35
    assert set(quantized_linears(quantized)) == {"0", "2"}
    assert_untouched(model, before)
    summary = report.to_dict()
    assert summary["size_ratio"] == report.size_ratio and summary["latency_ratio"] > 0
    assert "| accuracy (%) |" in report.to_markdown()


def test_inplace_quantises_the_model_itself(digits):
    model, x, _ = digits
    copy = quantize(model, "int8_dynamic", backend="torchao")  # a float copy to work on
    fresh = mlp().eval()
    fresh.load_state_dict(model.state_dict())
    result = quantize(fresh, backend="torchao", inplace=True)
    assert result is fresh and set(quantized_linears(fresh)) == {"0", "2"}
    torch.testing.assert_close(fresh(x), copy(x), rtol=0, atol=0)


def test_sizes_count_int8_data_scales_and_biases():
    model = mlp()
    floats = sum(p.numel() * 4 for p in model.parameters())
    assert quantized_size_bytes(model) == floats
    ao = quantize(model, backend="torchao")
    # per Linear: int8 weight, float32 scale per row, float32 bias
    assert quantized_size_bytes(ao) == 64 * 128 + 128 * 8 + 128 * 10 + 10 * 8
    legacy = quantize(model, backend="legacy")  # its scales are float64
    assert quantized_size_bytes(legacy) == 64 * 128 + 128 * 12 + 128 * 10 + 10 * 12


def test_report_without_labels_has_no_accuracy_row():
    torch.manual_seed(0)
    model = mlp().eval()
    report = quantization_report(model, quantize(model), torch.randn(4, 64), repeats=1)
    assert report.accuracy_before is None and report.accuracy_after is None
    assert "accuracy" not in report.to_markdown() and "output cosine" in report.to_markdown()


@pytest.mark.parametrize(("mode", "backend"), COMBOS)
@pytest.mark.parametrize("batch", [1, 4])  # 4 x 32 tokens take attention's fused-QKV path
def test_bert_tiny_logits_agree(mode, backend, batch):
    model = create_model("bert-tiny", seed=0, head="classification", num_classes=16).eval()
    before = snapshot(model)
    ids = torch.randint(0, 30522, (batch, 32), generator=torch.Generator().manual_seed(1))
    quantized = quantize(model, mode, backend=backend)
    with torch.no_grad():
        ref, out = model(ids), quantized(ids)
    cosine = nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)
    assert cosine >= 0.99
    assert len(quantized_linears(quantized)) == 2 * 6 + 2  # 6 per block, pooler, head
    assert_untouched(model, before)


def test_bert_output_dataclass_gives_its_hidden_state():
    model = create_model("bert-tiny", seed=0).eval()
    ids = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        out = model(ids)
    assert output_tensor(out) is out.last_hidden_state
    with pytest.raises(QuantizationError, match="no float tensor"):
        output_tensor((ids,))


@pytest.mark.parametrize("backend", ["legacy", "torchao"])
def test_gpt2_tiny_generates_after_quantisation(backend):
    model = create_model("gpt2-tiny", seed=0).eval()
    quantized = quantize(model, backend=backend)
    names = set(quantized_linears(quantized))
    assert "nodes.head" not in names and len(names) == 2 * 6  # the tied LM head stays in float
    assert quantized.nodes.head.weight is quantized.nodes.embed.token.weight
    prompt = torch.randint(0, 50257, (2, 5), generator=torch.Generator().manual_seed(0))
    for use_cache in (True, False):  # activation scales differ per call: tokens may too
        tokens = generate(quantized, prompt, max_new_tokens=6, use_cache=use_cache)
        assert tokens.shape == (2, 11) and torch.equal(tokens[:, :5], prompt)
        assert 0 <= int(tokens.min()) and int(tokens.max()) < 50257
    with torch.no_grad():
        ref, out = model(prompt), quantized(prompt)
    assert nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0) >= 0.99


def test_legacy_path_leaks_no_warning(tmp_path):
    model = create_model("bert-tiny", seed=0).eval()
    ids = torch.randint(0, 100, (2, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantized = quantize(model, backend="legacy")
        with torch.no_grad():
            quantized(ids)
        save_quantized(quantized, tmp_path / "m.safetensors")
        load_quantized(tmp_path / "m.safetensors")


@pytest.mark.parametrize(("mode", "backend"), COMBOS)
def test_save_load_round_trip_is_exact(tmp_path, mode, backend):
    model = create_model("bert-tiny", seed=0, head="classification", num_classes=4).eval()
    quantized = quantize(model, mode, backend=backend)
    path = save_quantized(quantized, tmp_path / "q.safetensors")
    ids = torch.randint(0, 30522, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = quantized(ids)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert meta["mode"] == mode and meta["backend"] == backend
        assert f.get_tensor("nodes.head.weight").dtype == torch.int8
        assert f.get_tensor("nodes.head.weight_scale").shape == (4,)
    before = snapshot(model)
    for template in (None, model, model.spec):
        loaded = load_quantized(path, template)
        assert not loaded.training and set(quantized_linears(loaded)) == set(
            quantized_linears(quantized)
        )
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids), expected, rtol=0, atol=0)
    assert_untouched(model, before)


def test_round_trip_keeps_tied_weights(tmp_path):
    model = create_model("gpt2-tiny", seed=0).eval()
    quantized = quantize(model, backend="torchao")
    path = save_quantized(quantized, tmp_path / "gpt.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["aliases"]) == {"nodes.head.weight": "nodes.embed.token.weight"}
    loaded = load_quantized(path)
    assert loaded.nodes.head.weight is loaded.nodes.embed.token.weight
    ids = torch.randint(0, 50257, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), quantized(ids), rtol=0, atol=0)


def test_default_backends_follow_the_measurements(monkeypatch):
    assert default_backend("int8_dynamic") == "legacy" == default_backend("int8")
    assert default_backend("int8_weight_only") == "torchao"
    monkeypatch.setattr(q, "_legacy_available", lambda: False)
    assert default_backend("int8_dynamic") == "torchao"
    with pytest.raises(QuantizationError, match="no quantised CPU engine"):
        quantize(mlp(), backend="legacy")
    quantized = quantize(mlp())
    assert isinstance(quantized[0], Linear)  # torchao keeps our module


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "int4"}, r"mode='int4' must be one of"),
        ({"mode": "int8_dynamc"}, r"did you mean 'int8_dynamic'"),
        ({"mode": 8}, r"mode=8 must be one of"),
        ({"backend": "fbgemm"}, r"backend='fbgemm' must be one of"),
        ({"mode": "int8_weight_only", "backend": "legacy"}, r"no int8 weight-only"),
        ({"filter": lambda m, name: False}, r"none of the 2 Linear.*filter rejected it"),
    ],
)
def test_bad_arguments_are_clear_errors_and_change_nothing(kwargs, message):
    model = mlp()
    before = snapshot(model)
    with pytest.raises(QuantizationError, match=message) as info:
        quantize(model, **kwargs)
    assert isinstance(info.value, NetArchitectError) and isinstance(info.value, ValueError)
    assert_untouched(model, before)
    assert isinstance(model[0], Linear) and type(model[0].weight) is nn.Parameter


def test_model_without_linear_layers_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    before = snapshot(model)
    with pytest.raises(QuantizationError, match="Sequential has no nn.Linear layer to quantise"):
        quantize(model)
    assert_untouched(model, before)
    with pytest.raises(QuantizationError, match="needs an nn.Module"):
        quantize("bert-tiny")  # type: ignore[arg-type]


def test_linears_that_must_stay_float_are_named():
    with pytest.raises(QuantizationError, match="parent reads the weight directly"):
        quantize(nn.MultiheadAttention(8, 2))
    shared = nn.Linear(4, 4)
    tied = nn.Sequential(shared, nn.Linear(4, 4))
    tied[1].weight = shared.weight
    with pytest.raises(QuantizationError, match="0: its weight is tied to another module"):
        quantize(tied)
    for backend in ("legacy", "torchao"):
        with pytest.raises(QuantizationError, match="0: it is already quantised"):
            quantize(quantize(mlp(), backend=backend), backend=backend)
    half = nn.Linear(4, 4)
    half.weight = nn.Parameter(half.weight.detach().to(torch.int8), requires_grad=False)
    with pytest.raises(QuantizationError, match="not a plain float tensor"):
        quantize(half)
    with pytest.raises(QuantizationError, match="meta device"):
        quantize(nn.Linear(4, 4, device="meta"))


def test_legacy_backend_keeps_subclasses_with_their_own_forward():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Linear(8, 8), Scaled(8, 8))
    assert set(quantized_linears(quantize(model, backend="legacy"))) == {"0"}
    assert set(quantized_linears(quantize(model, backend="torchao"))) == {"0", "1"}
    with pytest.raises(QuantizationError, match="legacy backend would drop Scaled.forward"):
        quantize(Scaled(8, 8), backend="legacy")


def test_legacy_backend_needs_float32_weights():
    model = mlp().to(torch.bfloat16)
    with pytest.raises(QuantizationError, match="legacy backend needs float32 weights, not torch.bfloat16"):
        quantize(model, backend="legacy")
    assert len(quantized_linears(quantize(model, backend="torchao"))) == 2


def test_save_refuses_a_float_or_mixed_model(tmp_path):
    with pytest.raises(QuantizationError, match="no quantised Linear layer; call quantize"):
        save_quantized(mlp(), tmp_path / "f.safetensors")
    mixed = quantize(mlp(), backend="legacy", filter=lambda m, name: name == "0")
    mixed = quantize(mixed, backend="torchao", inplace=True)
    with pytest.raises(QuantizationError, match=r"mixes quantisations .*'legacy'.*'torchao'"):
        save_quantized(mixed, tmp_path / "f.safetensors")
    assert not list(tmp_path.iterdir())


def test_load_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(QuantizationError, match="is not an existing file"):
        load_quantized(tmp_path / "missing.safetensors", mlp())
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(QuantizationError, match="not a readable safetensors file"):
        load_quantized(garbage, mlp())
    plain = save_weights(mlp(), tmp_path / "float.safetensors")
    with pytest.raises(QuantizationError, match="not a quantised model saved by save_quantized"):
        load_quantized(plain, mlp())
    path = save_quantized(quantize(mlp()), tmp_path / "mlp.safetensors")
    with pytest.raises(QuantizationError, match="no spec stored; pass the float model"):
        load_quantized(path)


def test_load_refuses_a_template_that_does_not_fit(tmp_path):
    path = save_quantized(quantize(mlp(), backend="torchao"), tmp_path / "mlp.safetensors")
    wide = nn.Sequential(Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    with pytest.raises(QuantizationError, match=r"0\.weight is torch.int8 \(128, 64\), the template"):
        load_quantized(path, wide)
    with pytest.raises(QuantizationError, match="the template does not fit"):
        load_quantized(path, nn.Sequential(nn.Conv1d(1, 1, 1)))
    fewer = nn.Sequential(Linear(64, 128), nn.ReLU(), nn.Conv1d(1, 1, 1))
    with pytest.raises(QuantizationError, match=r"template has no quantisable Linear \['2'\]"):
        load_quantized(path, fewer)
    extra = nn.Sequential(Linear(64, 128), nn.ReLU(), nn.Linear(128, 10), nn.LayerNorm(10))
    with pytest.raises(QuantizationError, match=r"missing \['3.bias', '3.weight'\]"):
        load_quantized(path, extra)
    normed = nn.Sequential(nn.LayerNorm(64), Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    q_path = save_quantized(quantize(normed), tmp_path / "normed.safetensors")
    other = nn.Sequential(nn.LayerNorm(32), Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    with pytest.raises(QuantizationError, match=r"0.weight has shape \(64,\), the template needs"):
        load_quantized(q_path, other)


def test_attention_keeps_fused_projections_unless_they_are_quantised():
    model = create_model("bert-tiny", seed=0).eval()
    ids = torch.randint(0, 30522, (4, 32), generator=torch.Generator().manual_seed(3))
    mlp_only = quantize(model, filter=lambda m, name: ".mlp." in name)
    attention = [m for m in mlp_only.modules() if hasattr(m, "q_proj")]
    assert attention and all(m._plain_projections() for m in attention)
    everything = quantize(model)
    quantized = [m for m in everything.modules() if hasattr(m, "q_proj")]
    assert quantized and not any(m._plain_projections() for m in quantized)
    clone = copy.deepcopy(everything)
    with torch.no_grad():
        ref, a, b, c = model(ids), mlp_only(ids), everything(ids), clone(ids)
    for out in (a, b, c):
        cosine = nn.functional.cosine_similarity(
            ref.last_hidden_state.flatten(), out.last_hidden_state.flatten(), dim=0
        )
        assert cosine >= 0.99
    torch.testing.assert_close(c.last_hidden_state, b.last_hidden_state, rtol=0, atol=0)
