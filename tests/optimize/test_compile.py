"""compile_model validates its arguments; graph_breaks finds every break with its source line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.optimize import compile as compile_mod
from netarchitect.optimize.compile import (
    GraphBreak,
    compile_model,
    compile_modes,
    format_graph_breaks,
    graph_breaks,
)


class Clean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        return self.fc(x).relu() * scale


class Printing(nn.Module):
    """Two breaks: a print (Dynamo cannot trace it) and a branch on a tensor's value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.sin()
        print("side effect")  # BREAK-PRINT
        if x.sum() > 0:  # BREAK-BRANCH
            y = y + 1
        return y.cos()


class Expert(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class LoopRouting(nn.Module):
    """A data-dependent op inside a loop (as a sparse MoE): Dynamo skips the whole frame."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Expert() for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero(x[:, 0] > e).squeeze(1)  # BREAK-NONZERO
            out[idx] = expert(x[idx])
        return out


def _line(marker: str) -> int:
    with open(__file__, encoding="utf-8") as f:
        return next(i for i, line in enumerate(f, start=1) if f"# {marker}" in line)


# ---------------------------------------------------------------------------- compile_model


def test_compile_model_matches_eager_and_shares_parameters() -> None:
    model = Clean()
    x = torch.randn(2, 4)
    compiled = compile_model(model, backend="eager")
    torch.testing.assert_close(compiled(x, scale=2.0), model(x, scale=2.0), rtol=0, atol=0)
    assert compiled.fc.weight is model.fc.weight


def test_compile_model_accepts_a_callable_backend_and_function() -> None:
    seen = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        seen.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = compile_model(lambda x: x.exp() + 1, backend=backend, dynamic=False)
    torch.testing.assert_close(compiled(torch.ones(3)), torch.ones(3).exp() + 1)
    assert len(seen) == 1


def test_compile_modes_lists_inductor_modes() -> None:
    modes = compile_modes()
    assert {"default", "reduce-overhead", "max-autotune"} <= set(modes)
    assert compile_model(Clean(), mode="default") is not None  # compiles lazily: no cost here
    assert compile_model(Clean(), options={"layout_optimization": False}) is not None


@pytest.mark.parametrize(
    ("kwargs", "path", "words"),
    [
        ({"mode": "max-autotun"}, "mode", ["'max-autotun'", "did you mean 'max-autotune'"]),
        ({"mode": "default", "backend": "eager"}, "mode", ["'inductor' backend only"]),
        ({"backend": "indcutor"}, "backend", ["'indcutor'", "did you mean 'inductor'"]),
        ({"backend": 3}, "backend", ["3", "choose one of"]),
        ({"fullgraph": "yes"}, "fullgraph", ["True or False"]),
        ({"dynamic": 1}, "dynamic", ["True, False or None"]),
        (
            {"options": {"layout_optimisation": False}},
            "options.layout_optimisation",
            ["unknown inductor option", "did you mean 'layout_optimization'"],
        ),
        ({"options": [("a", 1)]}, "options", ["must be a dict"]),
        ({"options": {}, "mode": "default"}, "options", ["not both"]),
        ({"options": {}, "backend": "eager"}, "options", ["'inductor' backend only"]),
    ],
)
def test_compile_model_bad_arguments(kwargs: dict, path: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        compile_model(Clean(), **kwargs)
    assert isinstance(info.value, NetArchitectError) and info.value.path == path
    for word in words:
        assert word in str(info.value)


def test_compile_model_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="nn.Module or a callable"):
        compile_model(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nn.Module or a callable"):
        graph_breaks("model")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- graph_breaks


def test_no_breaks_in_a_clean_module_with_kwargs() -> None:
    assert graph_breaks(Clean(), torch.randn(2, 4), scale=3.0) == []


def test_breaks_name_reason_line_function_and_code(capsys: pytest.CaptureFixture) -> None:
    breaks = graph_breaks(Printing(), torch.ones(3))
    assert [b.lineno for b in breaks] == [_line("BREAK-PRINT"), _line("BREAK-BRANCH")]
    printed, branch = breaks
    assert printed.filename == __file__ and printed.function == "forward"
    assert printed.code == 'print("side effect")  # BREAK-PRINT'
    assert "print" in printed.reason and "\n" not in printed.reason
    assert branch.reason.startswith("Data-dependent branching: ")
    assert "Hint" in branch.detail or "Explanation" in branch.detail
    assert "Graph break" not in capsys.readouterr().err  # Dynamo's log stays off the console


def test_break_inside_a_loop_is_reported_once_at_its_line() -> None:
    breaks = graph_breaks(LoopRouting(), torch.randn(5, 2))
    assert len(breaks) == 1
    (brk,) = breaks
    assert brk.lineno == _line("BREAK-NONZERO") and brk.function == "forward"
    assert brk.reason.startswith("Dynamic shape operator: ") and "nonzero" in brk.reason


def test_graph_breaks_resets_dynamo_so_earlier_compiles_do_not_hide_breaks() -> None:
    model, x = Printing(), torch.ones(3)
    torch.compile(model, backend="eager")(x)  # warm Dynamo's cache with the broken graphs
    assert len(graph_breaks(model, x)) == 2
    assert len(graph_breaks(model, x)) == 2


def test_graph_breaks_falls_back_to_explain_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    """A break Dynamo compiled but whose log message we could not read still appears."""
    monkeypatch.setattr(compile_mod, "_parse", lambda message: None)
    breaks = graph_breaks(Printing(), torch.ones(3))
    assert _line("BREAK-PRINT") in [b.lineno for b in breaks]
    brk = next(b for b in breaks if b.lineno == _line("BREAK-PRINT"))
    assert brk.function == "forward" and "print" in brk.code and brk.reason


def test_parse_ignores_messages_without_a_location() -> None:
    assert compile_mod._parse("Graph break (user stack suppressed)") is None
    brk = compile_mod._parse(f"Graph break in user code at {__file__}:{_line('BREAK-PRINT')}")
    assert brk is not None and brk.reason == "unknown reason" and brk.function == ""


def test_summary_keeps_type_and_explanation() -> None:
    reason = "Encountered graph break:\n\nSome op\n  Explanation: it is dynamic.\n  Hint: no"
    assert compile_mod._summary(reason) == "Some op: it is dynamic."
    assert compile_mod._summary("\n  plain reason \nmore") == "plain reason"


# ---------------------------------------------------------------------------- formatting

BREAKS = [
    GraphBreak("Dynamic shape operator: nonzero", "/x/moe.py", 202, "forward", "idx = nonzero()"),
    GraphBreak("Data-dependent branching: " + "long " * 40, "/x/exit.py", 9),
]


def test_graph_break_str_is_one_readable_line() -> None:
    assert str(BREAKS[0]) == (
        "/x/moe.py:202 in forward: Dynamic shape operator: nonzero  [idx = nonzero()]"
    )
    assert str(BREAKS[1]).startswith("/x/exit.py:9: Data-dependent branching")


def test_location_is_relative_when_shorter(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    brk = GraphBreak("r", str(tmp_path / "pkg" / "m.py"), 3)
    assert brk.location == "pkg/m.py:3"


def test_format_graph_breaks_table_lines_and_empty() -> None:
    table = format_graph_breaks(BREAKS, width=80)
    lines = table.splitlines()
    assert lines[0] == "2 graph breaks"
    assert lines[1].split() == ["#", "location", "function", "reason"]
    assert set(lines[2]) == {"-"}
    assert lines[3].split()[:3] == ["1", "/x/moe.py:202", "forward"]
    assert all(len(line) <= 80 for line in lines) and lines[4].endswith("…")
    assert format_graph_breaks(BREAKS, style="lines") == f"{BREAKS[0]}\n{BREAKS[1]}"
    assert format_graph_breaks(BREAKS[:1]).startswith("1 graph break\n")
    assert format_graph_breaks([]) == "no graph breaks"
    with pytest.raises(SpecError, match="style='csv'"):
        format_graph_breaks(BREAKS, style="csv")


def test_graph_breaks_restores_dynamo_logging_when_the_model_fails() -> None:
    from torch._dynamo.symbolic_convert import graph_break_log

    before = (graph_break_log.level, graph_break_log.propagate, list(graph_break_log.handlers))
    with pytest.raises(RuntimeError):
        graph_breaks(Clean(), torch.randn(2, 5))  # wrong feature size: the model's own error
    after = (graph_break_log.level, graph_break_log.propagate, list(graph_break_log.handlers))
    assert after == before
