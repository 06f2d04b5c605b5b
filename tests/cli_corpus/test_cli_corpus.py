"""Bad-input corpus for the ``netarchitect`` command (the cases are data: ``*.yaml`` here).

Every case runs ``netarchitect.cli.main(argv)`` in-process in a fresh temporary folder
(also the working directory) and must end with: exit status 2, exactly one ``error:``
line on stderr matching the case's ``stderr`` regex, no traceback, and no new file or
folder except those its ``writes`` globs allow. A handful also run as real processes.

A case is a mapping:

``id``
    unique name; ``argv``: the arguments (``{tmp}`` is the case's folder, ``{repo}`` the
    repository); ``files``: what to create first, name -> content (see :func:`_create`);
    ``stderr``: a regex searched in the error line; ``writes``: globs (relative to
    ``{tmp}``) of paths the command may create or change; ``exit``: the status (default 2);
    ``xfail``: why it still fails (names the fix); ``needs_non_root: true``: skipped as root
    (permissions do not stop root); ``subprocess: true``: also run as ``python -m netarchitect``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from netarchitect import cli
from netarchitect.cli import main

HERE = Path(__file__).parent
REPO = HERE.parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _load_cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(HERE.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")):
            cases.append({**case, "source": path.name})
    return cases


CASES = _load_cases()


def _params(cases: list[dict[str, Any]]) -> list[Any]:
    params = []
    for case in cases:
        marks = []
        if case.get("xfail"):
            marks.append(pytest.mark.xfail(reason=case["xfail"], strict=False))
        if case.get("needs_non_root") and IS_ROOT:
            marks.append(pytest.mark.skip(reason="root reads and writes regardless of permissions"))
        params.append(pytest.param(case, id=case["id"], marks=marks))
    return params


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{repo}", str(REPO))


# --------------------------------------------------------------------------- file makers


def _alias_bomb(levels: int = 9, into: str = "nodes") -> str:
    """Ten lists of ten lists ... (10**levels leaves once expanded) as the nodes or a parameter."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    if into == "nodes":
        return "\n".join(lines) + f"\nnodes: *a{levels - 1}\n"
    return "\n".join(lines) + (
        f"\ninputs: {{x: {{shape: [4]}}}}\n"
        f"nodes: [{{id: a, block: relu, params: {{inplace: *a{levels - 1}}}}}]\n"
    )


def _npz(path: Path, **arrays: Any) -> None:
    with path.open("wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


GENERATORS = {
    "alias_bomb": lambda path, **kw: path.write_text(_alias_bomb(**kw)),
    "deep_list": lambda path, depth: path.write_text("nodes: " + "[" * depth + "]" * depth + "\n"),
    "npz": _npz,
    "fifo": lambda path: os.mkfifo(path),
}


def _create(tmp: Path, name: str, content: Any) -> None:
    """``str``: UTF-8 text; ``bytes`` (``!!binary``): raw bytes; a mapping: ``{dir: true}``,
    ``{copy: REPO_PATH}``, ``{symlink: TARGET}``, ``{gen: NAME, ...}`` (see GENERATORS),
    ``{text: ..., mode: 0o000}``."""
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(_fill(content, tmp), encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content.get("dir"):
        path.mkdir(exist_ok=True)
    elif "copy" in content:
        path.write_bytes((REPO / content["copy"]).read_bytes())
    elif "symlink" in content:
        path.symlink_to(_fill(content["symlink"], tmp))
    elif "gen" in content:
        args = {k: v for k, v in content.items() if k != "gen"}
        GENERATORS[content["gen"]](path, **args)
    else:
        path.write_text(_fill(content.get("text", ""), tmp), encoding="utf-8")
    if isinstance(content, dict) and "mode" in content:
        path.chmod(content["mode"])


def _listing(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root`` with (size, mtime) for regular files."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
        for p in root.rglob("*")
    }


def _written(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """Paths created or changed between two listings."""
    return {p for p, v in after.items() if p not in before or before[p] != v}


@pytest.fixture
def case_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The case's folder, also the working directory (stray relative writes are seen)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _prepare(case: dict[str, Any], tmp: Path) -> list[str]:
    for name, content in (case.get("files") or {}).items():
        _create(tmp, name, content)
    return [_fill(str(a), tmp) for a in case["argv"]]


def _check(case: dict[str, Any], code: int, err: str, written: set[str]) -> None:
    assert "Traceback" not in err, err
    assert code == case.get("exit", 2), err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line: {err!r}"
    assert re.search(case["stderr"], lines[0]), f"{case['stderr']!r} not in {lines[0]!r}"
    allowed = case.get("writes") or []
    stray = sorted(p for p in written if not any(fnmatch(p, g) for g in allowed))
    assert not stray, f"wrote {stray}"


def test_corpus_is_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(CASES) >= 150
    known = {
        "id",
        "argv",
        "files",
        "stderr",
        "writes",
        "exit",
        "xfail",
        "subprocess",
        "needs_non_root",
        "source",
    }
    for case in CASES:
        assert {"id", "argv", "stderr"} <= case.keys() <= known, case
        re.compile(case["stderr"])
    commands = {c["argv"][0] for c in CASES if c["argv"]}
    assert {
        "blocks",
        "models",
        "validate",
        "build",
        "inspect",
        "doctor",
        "design",
        "report",
    } <= commands


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_invocation(
    case: dict[str, Any], case_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _prepare(case, case_dir)
    before = _listing(case_dir)
    code = main(argv)
    _, err = capsys.readouterr()
    _check(case, code, err, _written(before, _listing(case_dir)))


SUBPROCESS_CASES = [c for c in CASES if c.get("subprocess") and not c.get("xfail")]


@pytest.mark.slow  # four interpreters importing torch side by side: ~7 s on two idle cores
def test_real_processes_print_one_line(tmp_path: Path) -> None:
    """The marked cases as ``python -m netarchitect`` (run side by side): nothing but the line."""
    assert len(SUBPROCESS_CASES) >= 4
    runs = []
    for case in SUBPROCESS_CASES:
        folder = tmp_path / case["id"]
        folder.mkdir()
        argv = _prepare(case, folder)
        before = _listing(folder)
        proc = subprocess.Popen(
            [sys.executable, "-m", "netarchitect", *argv],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs.append((case, folder, before, proc))
    for case, folder, before, proc in runs:
        _, err = proc.communicate(timeout=120)
        _check(case, proc.returncode, err, _written(before, _listing(folder)))


# --------------------------------------------------------------------------- internal bugs


def test_internal_bug_exits_1_with_traceback_and_one_line(monkeypatch, capsys) -> None:
    def broken(args, out):
        raise KeyError("oops")

    monkeypatch.setattr(cli, "_cmd_models", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "KeyError: 'oops'" in err
    last = err.strip().splitlines()[-1]
    assert "internal error (KeyError)" in last and "this is a bug" in last
    assert not last.startswith("error:")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MemoryError(), "error: out of memory"),
        (MemoryError("cannot allocate 8 GiB"), "error: out of memory (cannot allocate 8 GiB)"),
        (PermissionError(13, "Permission denied", "/x/y"), "error: /x/y: Permission denied"),
    ],
)
def test_environment_failures_are_one_line(monkeypatch, capsys, exc, expected) -> None:
    def failing(args, out):
        raise exc

    monkeypatch.setattr(cli, "_cmd_models", failing)
    assert main(["models"]) == 2
    assert capsys.readouterr().err == expected + "\n"


def test_an_os_error_without_a_file_is_a_bug(monkeypatch, capsys) -> None:
    def failing(args, out):
        raise OSError("socket closed")

    monkeypatch.setattr(cli, "_cmd_models", failing)
    assert main(["models"]) == 1
    assert "this is a bug" in capsys.readouterr().err


def test_broken_pipe_is_quiet(monkeypatch, capsys) -> None:
    def failing(args, out):
        out.on_broken_pipe()  # what rich calls when the reader of stdout went away

    monkeypatch.setattr(cli, "_cmd_models", failing)
    assert main(["models"]) == 141
    assert capsys.readouterr().err == ""


def test_several_problems_share_one_line(capsys, tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "inputs: {x: {shape: [4]}}\nnodes:\n  - {id: a, block: lineer}\n"
        "  - {id: b, block: relu, inputs: [nowhere]}\noutputs: [b]\n"
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: 2 problems: ")
    assert (
        "unknown block 'lineer'" in err and "unknown node or input 'nowhere'" in err and "; " in err
    )
