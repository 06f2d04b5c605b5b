"""optimize.export: torch.export of every registered model with output parity, ONNX with
onnxruntime parity on representative models, atomic saving, and the errors a user can fix."""

from __future__ import annotations

import dataclasses
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.export import Dim

import netarchitect as na
from netarchitect.errors import NetArchitectError
from netarchitect.optimize import export as export_module
from netarchitect.optimize.compile import data_dependent_modules
from netarchitect.optimize.export import export_onnx, export_program
from netarchitect.optimize.fusion import fuse
from netarchitect.registry import model_example

pytestmark = pytest.mark.filterwarnings("ignore")


def small(name: str):
    ex = model_example(name)
    return na.create_model(name, **ex.kwargs, seed=0).eval(), ex.inputs


class Branchy(nn.Module):
    """Python control flow on a tensor's value: not traceable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


class Counter(nn.Module):
    """Python state changed by each call: the traced program bakes in a stale value."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + self.calls


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


# --------------------------------------------------------------------------- torch.export


@pytest.mark.slow
@pytest.mark.parametrize("name", na.list_models())
def test_every_registered_model_exports_with_parity(name: str) -> None:
    model, inputs = small(name)
    if data_dependent_modules(model):  # adaptive ODE solvers: refused with the reason
        with pytest.raises(NetArchitectError, match="picks its steps from tensor values"):
            export_program(model, *inputs)
        return
    program = export_program(model, *inputs)
    assert isinstance(program, torch.export.ExportedProgram)


@pytest.mark.parametrize("name", ["resnet18", "bert-base"])  # bert-base returns a dataclass
def test_representative_models_export_and_fused_models_too(name: str) -> None:
    model, inputs = small(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_program(model, *inputs)
    export_program(fuse(model), *inputs)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@dataclasses.dataclass
class Pair:
    first: torch.Tensor
    second: torch.Tensor | None = None


class Nested(nn.Module):
    """Outputs in a dict and a tuple holding a dataclass (registered on the first export)."""

    def forward(self, x: torch.Tensor):
        return {"pair": (Pair(x * 2), x + 1), "y": x - 1}


def test_nested_dataclass_outputs_are_registered(tmp_path) -> None:
    x = torch.randn(2, 3)
    program = export_program(Nested(), x, path=tmp_path / "nested.pt2")
    out = program.module()(x)
    assert isinstance(out["pair"][0], Pair)
    torch.testing.assert_close(out["pair"][0].first, x * 2)
    export_program(Nested(), x)  # registering again is not needed (nor an error)


def test_saved_program_loads_and_matches(tmp_path) -> None:
    model, x = mlp(), torch.randn(2, 4)
    path = tmp_path / "sub" / "mlp.pt2"
    export_program(model, x, path=path)
    loaded = torch.export.load(path)
    torch.testing.assert_close(loaded.module()(x), model(x))
    assert [p.name for p in path.parent.iterdir()] == ["mlp.pt2"]  # no temporary left


def test_dynamic_batch_and_keyword_inputs() -> None:
    model = mlp()
    batch = Dim("batch", min=1, max=64)
    program = export_program(model, torch.randn(2, 4), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 4)
    torch.testing.assert_close(program.module()(x), model(x))

    class Keyword(nn.Module):
        def forward(self, x, *, scale):
            return x * scale

    out = export_program(Keyword(), torch.ones(2), kwargs={"scale": torch.tensor(3.0)})
    torch.testing.assert_close(out.module()(torch.ones(2), scale=torch.tensor(3.0)),
                               torch.full((2,), 3.0))


def test_data_dependent_control_flow_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "branchy.pt2"
    with pytest.raises(NetArchitectError, match=r"cannot export Branchy: .*tensor values") as e:
        export_program(Branchy(), torch.randn(3), path=path)
    assert "test_export.py" in str(e.value)  # names the source line
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_spec_model_error_names_the_spec() -> None:
    model = mlp()
    model.spec = type("S", (), {"name": "my_net"})()  # a spec-like name is used
    with pytest.raises(NetArchitectError, match="my_net"):
        export_program(model, torch.randn(2, 4), dynamic_shapes=({0: Dim("b", min=4)},))


def test_violated_dynamic_shape_is_a_clear_error() -> None:
    with pytest.raises(NetArchitectError, match="cannot export Sequential"):
        export_program(mlp(), torch.randn(2, 4), dynamic_shapes=({0: Dim("b", min=4)},))
    with pytest.raises(NetArchitectError, match="cannot export Sequential"):
        export_program(mlp(), torch.randn(2, 4), dynamic_shapes=({0: Dim("b")}, {0: Dim("c")}))


def test_program_that_differs_from_the_model_is_refused() -> None:
    with pytest.raises(NetArchitectError, match="exported program of Counter differs"):
        export_program(Counter(), torch.zeros(2))


def test_training_mode_mismatch_says_to_call_eval() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.5)).train()
    with pytest.raises(NetArchitectError, match=r"training mode: call \.eval\(\) first"):
        export_program(model, torch.randn(8, 4))


def test_parity_check_counts_outputs() -> None:
    with pytest.raises(NetArchitectError, match="returns 1 tensor"):
        export_module._check_parity("m", "the program", [torch.zeros(1)],
                                    [torch.zeros(1), torch.zeros(1)], 1e-5, 1e-5)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch) -> None:
    def broken(program, f):
        with open(f, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(torch.export, "save", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_program(mlp(), torch.randn(2, 4), path=tmp_path / "m.pt2")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ONNX


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "vit_ti_16", "gpt2-tiny", "bert-tiny"])
def test_onnx_export_matches_onnxruntime(name: str, tmp_path) -> None:
    model, inputs = small(name)
    path = export_onnx(model, *inputs, path=tmp_path / f"{name}.onnx")
    assert path.is_file() and path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx"]


def test_onnx_small_model_with_opset(tmp_path) -> None:
    import onnx

    path = export_onnx(mlp(), torch.randn(2, 4), path=tmp_path / "mlp.onnx", opset=18)
    assert onnx.load(str(path)).opset_import[0].version == 18
    export_onnx(mlp(), torch.randn(2, 4), path=tmp_path / "unchecked.onnx", check=False)


def test_onnx_parity_failure_leaves_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(export_module, "_onnx_outputs", lambda path, inputs: [torch.ones(2, 3)])
    with pytest.raises(NetArchitectError, match="the ONNX model of Sequential differs"):
        export_onnx(mlp(), torch.randn(2, 4), path=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_the_extra_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(NetArchitectError, match="'onnx' extra"):
        export_onnx(mlp(), torch.randn(2, 4), path=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_of_untraceable_model_is_a_clear_error(tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NetArchitectError, match="cannot export Branchy"):
            export_onnx(Branchy(), torch.randn(3), path=tmp_path / "b.onnx")
    assert list(tmp_path.iterdir()) == []


def test_quantised_models_export_with_torchao_and_are_refused_clearly_otherwise(tmp_path) -> None:
    from netarchitect.optimize.quantization import quantize

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(3, 8)
    legacy = quantize(model, "int8_dynamic", backend="legacy")
    with pytest.raises(NetArchitectError, match=r"'0' is a legacy int8 Linear.*backend='torchao'"):
        export_program(legacy, x)
    exportable = quantize(model, "int8_dynamic", backend="torchao")
    program = export_program(exportable, x)
    torch.testing.assert_close(program.module()(x), exportable(x))
    with pytest.raises(NetArchitectError, match=r"cannot export Sequential to ONNX: .*_int_mm"):
        export_onnx(exportable, x, path=tmp_path / "q.onnx")
    assert not list(tmp_path.iterdir())
