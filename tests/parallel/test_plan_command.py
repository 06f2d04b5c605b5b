"""``netarchitect plan`` end to end through netarchitect.cli.main."""

from __future__ import annotations

import json

import pytest

from netarchitect.cli import main
from netarchitect.parallel.errors import ParallelError
from netarchitect.parallel.plan_command import parse_bytes, parse_tokens

BASE = ["plan", "llama-tiny", "--seq-len", "32", "--set", "depth=2"]


def test_parse_bytes():
    assert parse_bytes("80GB") == 80 * 10**9
    assert parse_bytes("80GiB") == 80 * 2**30
    assert parse_bytes(" 1.5 tb") == 1.5e12
    assert parse_bytes("1024") == 1024
    for bad in ("80 apples", "GB", "-1GB", "0GB"):
        with pytest.raises(ParallelError, match="--gpu-memory: cannot read"):
            parse_bytes(bad)


def test_parse_tokens():
    assert parse_tokens("1M-tokens", 4096) == 2**20
    assert parse_tokens("4096-tokens", 4096) == 4096
    assert parse_tokens("256-seqs", 4096) == 256 * 4096
    assert parse_tokens("256", 128) == 256 * 128
    assert parse_tokens("2K", 8) == 2048 * 8
    with pytest.raises(ParallelError, match="--batch: cannot read"):
        parse_tokens("1M-apples", 8)
    with pytest.raises(ParallelError, match="not a whole number"):
        parse_tokens("1.5-tokens", 8)


def test_plan_prints_a_table(capsys):
    code = main([*BASE, "--gpus", "4", "--gpu-memory", "2GB", "--batch", "4K-tokens",
                 "--top", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "layout" in out and "ZeRO-2 4" in out
    assert "layouts fit in 2GB per GPU" in out


def test_plan_json(capsys):
    code = main([*BASE, "--gpus", "2", "--gpu-memory", "16GiB", "--batch", "8-seqs", "--json",
                 "--checkpointing", "--dtype", "fp32", "--optimizer", "sgd"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["training"]["global_tokens"] == 8 * 32
    assert data["training"]["checkpointing"] is True
    assert all(p["checkpointing"] for p in data["plans"])
    assert data["plans"][0]["memory"]["optimizer"] == 0  # plain SGD in fp32 keeps nothing


def test_nothing_fits(capsys):
    assert main([*BASE, "--gpus", "2", "--gpu-memory", "1KB", "--batch", "2-seqs"]) == 0
    out = capsys.readouterr().out
    assert "no layout fits" in out and "too big" in out


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "2", "--gpu-memory", "80apples", "--batch", "2"], "--gpu-memory: cannot read"),
    (["--gpus", "2", "--gpu-memory", "8GB", "--batch", "1M-apples"], "--batch: cannot read"),
    (["--gpus", "5", "--gpu-memory", "8GB", "--batch", "2-seqs"], "no layout of 5 GPUs"),
    (["--gpus", "0", "--gpu-memory", "8GB", "--batch", "2"], "must be positive"),
    (["--gpus", "two", "--gpu-memory", "8GB", "--batch", "2"], "invalid value 'two'"),
    (["--gpus", "2", "--gpu-memory", "8GB", "--batch", "2", "--set", "depth"], "KEY=VALUE"),
    (["--gpus", "2", "--gpu-memory", "8GB", "--batch", "2", "--set", "wings=2"],
     "does not take these arguments"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert main([*BASE, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unknown_and_unsuitable_models(capsys):
    args = ["--gpus", "2", "--gpu-memory", "8GB", "--seq-len", "8", "--batch", "2"]
    assert main(["plan", "llama-70", *args]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["plan", "resnet18", *args]) == 2
    assert "token models" in capsys.readouterr().err
