import subprocess
import sys

import pytest
import yaml

from netarchitect import __version__
from netarchitect.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_blocks_and_models(capsys):
    code, out, _ = run(["blocks", "lin*"], capsys)
    assert code == 0 and "linear" in out and "Linear" in out
    code, out, _ = run(["models"], capsys)
    assert code == 0


def test_build_summary_table(capsys, repo_root):
    code, out, _ = run(
        ["build", str(repo_root / "examples/specs/residual_mlp.yaml"), "--summary"], capsys
    )
    assert code == 0
    assert "res1" in out and "(B, 64)" in out and "(B, 10)" in out
    assert "8,320" in out  # fc1a: 64*128 + 128
    code, meta_out, _ = run(
        ["build", str(repo_root / "examples/specs/residual_mlp.yaml"), "--meta"], capsys
    )
    assert code == 0 and "8,320" in meta_out


def test_build_saves_weights(capsys, repo_root, tmp_path):
    target = tmp_path / "w.safetensors"
    code, _, _ = run(
        [
            "build",
            str(repo_root / "examples/specs/highway_mlp.yaml"),
            "--save-weights",
            str(target),
        ],
        capsys,
    )
    assert code == 0 and target.is_file()
    code, _, err = run(
        [
            "build",
            str(repo_root / "examples/specs/highway_mlp.yaml"),
            "--meta",
            "--save-weights",
            str(tmp_path / "x.safetensors"),
        ],
        capsys,
    )
    assert code == 2 and "drop --meta" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_validate_ok_and_broken(capsys, repo_root, tmp_path):
    code, out, _ = run(["validate", str(repo_root / "examples/specs/small_cnn_skip.yaml")], capsys)
    assert code == 0 and "valid" in out
    bad = yaml.safe_load((repo_root / "examples/specs/residual_mlp.yaml").read_text())
    bad["nodes"][1]["block"] = "lineer"
    bad["nodes"][4]["inputs"] = ["fc1b", "nowhere"]
    bad["outputs"] = ["hed"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, _, err = run(["validate", str(path)], capsys)
    assert code == 2
    assert "3 problems" in err
    assert "nodes[1].block: unknown block 'lineer'" in err
    assert "nodes[4].inputs[1]: unknown node or input 'nowhere'" in err
    assert "outputs[0]: 'hed' is not a node or input (did you mean 'head'?)" in err
    assert "Traceback" not in err


def test_validate_shape_problem(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "inputs: {x: [4]}\nnodes:\n  - {id: a, block: linear, params: {out_features: 3}}\n"
        "  - {id: b, block: identity, inputs: [a, x], merge: add}\n"
    )
    code, _, err = run(["validate", str(path)], capsys)
    assert code == 2 and "nodes[1].merge: add of incompatible shapes" in err


def test_missing_command_and_file(capsys, tmp_path):
    code, out, err = run([], capsys)
    assert code == 2 and out == ""
    assert err == (
        "error: netarchitect: a command is required: blocks, models, validate, build, inspect, "
        "doctor, design, report, optimize, extend, explain, train, plan (netarchitect --help "
        "describes them)\n"
    )
    code, _, err = run(["validate", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["valdate"],
            "error: netarchitect: argument COMMAND: invalid choice: 'valdate' (choose from ",
        ),
        (["build"], "error: netarchitect build: the following arguments are required: spec"),
        (["models", "a", "b"], "error: netarchitect: unrecognized arguments: b"),
        (
            ["build", "{spec}", "--seed", "-2"],
            "error: netarchitect build: argument --seed: seed -2 is outside [0, 2**63)",
        ),
    ],
)
def test_usage_errors_are_one_line(capsys, repo_root, argv, line):
    spec = str(repo_root / "examples/specs/residual_mlp.yaml")
    code, out, err = run([a.replace("{spec}", spec) for a in argv], capsys)
    assert code == 2 and out == "" and err.startswith(line) and err.count("\n") == 1


def test_help_still_prints_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["build", "--help"])
    assert info.value.code == 0 and "--save-weights" in capsys.readouterr().out


def test_build_seed_and_weights_round_trip(capsys, repo_root, tmp_path):
    target = tmp_path / "w.safetensors"
    spec = str(repo_root / "examples/specs/residual_mlp.yaml")
    assert run(["build", spec, "--seed", "7", "--save-weights", str(target)], capsys)[0] == 0
    import netarchitect as na
    from netarchitect.weights import load_weights

    model = load_weights(na.build(spec, seed=0), target)
    reference = na.build(spec, seed=7)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert a.equal(b)


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes: [\n")
    proc = subprocess.run(
        [sys.executable, "-m", "netarchitect", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_build_and_validate_a_hand_written_transformer(capsys, repo_root):
    spec = str(repo_root / "examples/specs/tiny_transformer.yaml")
    assert main(["validate", spec]) == 0
    assert "valid (5 nodes, outputs head (32, 256))" in capsys.readouterr().out
    assert main(["build", spec]) == 0
    out = capsys.readouterr().out
    assert "token_embedding" in out and "lm_head" in out
    assert "103,488" in out  # the tied head's weight is counted once in the total
