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
    code, _, _ = run(
        ["doctor", str(repo_root / "examples/specs/highway_mlp.yaml"), "--plot", str(png)], capsys
    )
    assert code == 0 and png.is_file() and png.stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["inspect", "_cli_tiny"], "--input: required for _cli_tiny, which is not spec-built"),
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
    code, out, _ = run(
        ["inspect", "resnet18", "--input", "1x3x224x224", "--meta", "--json"], capsys
    )
    payload = json.loads(out)
    assert code == 0 and payload["params"]["total"] == 11_689_512
    assert abs(payload["flops"]["macs"] / 1.814e9 - 1) < 0.005


def test_inputs_a_plain_module_cannot_take(capsys, tiny_model_name):
    code, _, err = run(["inspect", tiny_model_name, "--input", "3x6,3x6"], capsys)
    assert code == 2
    assert err.startswith(
        "error: --input: _cli_tiny cannot take 2 input(s): too many positional arguments"
    )


def test_running_out_of_memory_is_a_budget_error(capsys, tiny_model_name, monkeypatch):
    from netarchitect import analysis

    def oom(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        )

    monkeypatch.setattr(analysis, "inspect_command", oom)
    code, _, err = run(["inspect", tiny_model_name, "--input", "3x6"], capsys)
    assert code == 2 and err.startswith("error: --input: _cli_tiny on input 3x6 ran out of memory")


def test_input_limit_follows_available_memory(capsys, tiny_model_name, monkeypatch):
    from netarchitect import network

    monkeypatch.setattr(network, "available_memory", lambda: 4 * 1000)
    code, _, err = run(["inspect", tiny_model_name, "--input", "100x6"], capsys)  # 2,400 bytes
    assert code == 2 and "take 2.34 KiB, more than the 1000 B a run on real tensors may use" in err
    code, _, _ = run(["inspect", tiny_model_name, "--input", "100x6", "--meta"], capsys)
    assert code == 0


def test_spec_inputs_on_meta_are_not_size_checked(capsys, tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text("inputs: {x: {shape: [3, 40000, 40000]}}\nnodes: [{id: a, block: relu}]\n")
    code, out, err = run(["inspect", str(spec), "--meta", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["params"]["total"] == 0


def test_inputs_the_analysis_rejects(capsys, tiny_model_name, monkeypatch):
    from netarchitect import analysis

    def reject(*args, **kwargs):
        raise ValueError("inputs must be floating point\nsecond line")

    monkeypatch.setattr(analysis, "doctor_command", reject)
    code, _, err = run(["doctor", tiny_model_name, "--input", "3x6"], capsys)
    assert (
        code == 2
        and err
        == "error: --input: _cli_tiny cannot take input 3x6: inputs must be floating point\n"
    )


def test_registered_models_default_to_their_spec_inputs(capsys):
    code, out, _ = run(["inspect", "gpt2-tiny", "--meta", "--json"], capsys)
    assert code == 0
    rows = {row["path"]: row for row in json.loads(out)["summary"]}
    assert rows["nodes.head"]["output_shape"] == "[1, 128, 50257]"  # the spec's 128 tokens
