import json

import pytest
from torch import nn

import netarchitect as na
from netarchitect import registry
from netarchitect.cli import main


@pytest.fixture
def tiny_model_name():
    @na.register_model("_cli_tiny")
    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))

    yield "_cli_tiny"
    del registry._MODELS["_cli_tiny"], registry._MODEL_EXAMPLES["_cli_tiny"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_spec_table_and_json(capsys, repo_root):
    spec = str(repo_root / "examples/specs/residual_mlp.yaml")
    code, out, _ = run(["inspect", spec, "--backward"], capsys)
    assert code == 0 and "Forward:" in out and "Backward:" in out and "fc1a" in out
    code, out, _ = run(["inspect", spec, "--json", "--meta"], capsys)
    payload = json.loads(out)
    assert code == 0 and payload["params"]["total"] == 34058
    assert payload["flops"]["macs"] == 4 * 64 * 128 + 64 * 10  # four hidden linears + head, batch 1


def test_inspect_registered_model(capsys, tiny_model_name):
    code, out, _ = run(["inspect", tiny_model_name, "--input", "3x6", "--json"], capsys)
    payload = json.loads(out)
    assert code == 0 and payload["flops"]["macs"] == 3 * (6 * 5 + 5 * 2)
    code, out, _ = run(["inspect", tiny_model_name, "--input", "3x6", "--meta"], capsys)
    assert code == 0


def test_doctor_writes_plot(capsys, repo_root, tmp_path):
    png = tmp_path / "flow.png"
    code, _, _ = run(["doctor", str(repo_root / "examples/specs/highway_mlp.yaml"), "--plot", str(png)], capsys)
    assert code == 0 and png.is_file() and png.stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["inspect", "_cli_tiny"], "--input: required for a registered model"),
        (["inspect", "_cli_tiny", "--input", "3xq"], "--input:"),
        (["inspect", "_cli_tiny", "--input", "3x7"], "--input: _cli_tiny cannot take input 3x7"),
        (["inspect", "no_such_model", "--input", "1x3"], "unknown model 'no_such_model'"),
        (["doctor", "_cli_tiny"], "--input: required"),
    ],
)
def test_bad_invocations_exit_2(argv, fragment, capsys, tiny_model_name):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert fragment in err and "Traceback" not in err


def test_inspect_registered_family_on_meta(capsys):
    code, out, _ = run(["inspect", "resnet18", "--input", "1x3x224x224", "--meta", "--json"], capsys)
    payload = json.loads(out)
    assert code == 0 and payload["params"]["total"] == 11_689_512
    assert abs(payload["flops"]["macs"] / 1.814e9 - 1) < 0.005
