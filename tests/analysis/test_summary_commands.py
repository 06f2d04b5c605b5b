"""summary() tables and the inspect/doctor command text, input-shape parsing."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console
from torch import nn

from netarchitect.analysis import (
    doctor_command,
    inspect_command,
    make_inputs,
    parse_input_shape,
    summary,
)


def convnet(device="cpu"):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, device=device), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10, device=device),
    )


def test_summary_rows_and_total():
    table = summary(convnet(), torch.randn(2, 3, 8, 8), depth=2)
    paths = [r.path for r in table.rows]
    assert paths == ["0", "0.0", "0.1", "1", "2"]
    conv = table.rows[1]
    assert (conv.type, conv.output_shape, conv.params) == ("Conv2d", "[2, 4, 8, 8]", 112)
    assert conv.macs == 2 * 4 * 64 * 27
    assert table.rows[0].macs == conv.macs  # parents include their children
    assert table.rows[2].activation_bytes == 4 * 2 * 4 * 64  # ReLU keeps its output
    assert table.total.params == 112 + 256 * 10 + 10
    assert table.total.macs == conv.macs + 2 * 256 * 10
    assert table.total.activation_bytes > 0
    assert [r.path for r in summary(convnet(), torch.randn(2, 3, 8, 8), depth=1).rows] == [
        "0",
        "1",
        "2",
    ]


def test_summary_renders_text_json_and_markdown():
    table = summary(convnet(), torch.randn(2, 3, 8, 8))
    console = Console(file=io.StringIO(), width=140)
    text = table.render(console)
    assert "Conv2d" in text and "Total" in text and "FLOPs = 2 x MACs" in text
    assert "Conv2d" in console.file.getvalue()
    data = json.loads(table.to_json())
    assert data["total"]["params"] == table.total.params and len(data["rows"]) == 5
    markdown = table.to_markdown()
    assert markdown.startswith("| Module | Type | Output shape |")
    assert "| `0.0` | " in markdown and "**Total**" in markdown


def test_summary_on_meta_equals_cpu_and_lists_uncounted():
    cpu = summary(convnet(), torch.randn(2, 3, 8, 8))
    meta = summary(convnet("meta"), torch.randn(2, 3, 8, 8, device="meta"))
    assert [r for r in cpu.rows] == [r for r in meta.rows] and cpu.total == meta.total

    class TopK(nn.Module):
        def forward(self, x):
            return torch.topk(x, 1).values

    assert any("aten.topk x1" in note for note in summary(TopK(), torch.randn(2, 3)).notes)
    with pytest.raises(ValueError, match="depth"):
        summary(convnet(), torch.randn(1, 3, 8, 8), depth=0)


def test_unused_module_row():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    rows = {r.path: r for r in summary(Net(), torch.randn(1, 2)).rows}
    assert rows["unused"].output_shape == "-" and rows["unused"].macs == 0

    class NoTensor(nn.Module):
        def forward(self, x):
            return {"size": x.shape[0]}

    assert summary(NoTensor(), torch.randn(1, 2)).total.output_shape == "-"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1x3x224x224", [((1, 3, 224, 224), torch.float32)]),
        ("2x16:int64", [((2, 16), torch.int64)]),
        ("2x16:int64, 2x16:bool", [((2, 16), torch.int64), ((2, 16), torch.bool)]),
        ("8:BF16", [((8,), torch.bfloat16)]),
    ],
)
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty input shape"),
        ("1x3xx4", "bad input shape '1x3xx4'"),
        ("1x-3", "bad input shape"),
        ("1x0x3", "zero-sized dimension"),
        ("2x16:int65", "unknown dtype 'int65'"),
        ("2x16,abc", "bad input shape 'abc'"),
    ],
)
def test_parse_input_shape_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_input_shape(text)


def test_make_inputs():
    x, idx = make_inputs(parse_input_shape("2x3:float16,2x4:int64"))
    assert x.dtype == torch.float16 and idx.dtype == torch.int64 and idx.sum() == 0
    (meta,) = make_inputs(parse_input_shape("2x3"), device="meta")
    assert meta.is_meta and meta.shape == (2, 3)
    (a,) = make_inputs([((3,), torch.float32)], seed=1)
    (b,) = make_inputs([((3,), torch.float32)], seed=1)
    assert torch.equal(a, b)


def test_inspect_command_text_and_json():
    model, x = convnet(), torch.randn(2, 3, 8, 8)
    console = Console(file=io.StringIO(), width=140)
    text = inspect_command(model, x, backward=True, console=console)
    assert "Backward:" in text and "peak training" in text and "Conv2d" in text
    assert "peak training" in console.file.getvalue()
    data = json.loads(inspect_command(model, x, as_json=True))
    assert data["params"]["total"] == 112 + 2570
    assert data["flops"]["backward"] is None and data["memory"]["optimizer"] == "adamw"
    printed = Console(file=io.StringIO(), width=140)
    inspect_command(model, x, backward=True, as_json=True, console=printed)
    assert json.loads(printed.file.getvalue())["flops"]["backward"]["macs"] > 0
    meta_text = inspect_command(convnet("meta"), x.to("meta"))
    assert "Total" in meta_text


def test_doctor_command(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    console = Console(file=io.StringIO(), width=140)
    text = doctor_command(
        model, torch.randn(8, 4), plot_path=tmp_path / "flow.png", console=console
    )
    assert "Verdict:" in text and "Gradient-flow plot written to" in text
    assert (tmp_path / "flow.png").exists()
    assert "Verdict:" in console.file.getvalue()
    assert "Verdict:" in doctor_command(model, torch.randn(8, 4))
