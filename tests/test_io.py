"""Checked file access: readable inputs, writable outputs, atomic writes, stale temporaries."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from netarchitect import _io
from netarchitect._io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    check_readable,
    check_writable,
    check_writable_dir,
)
from netarchitect.errors import NetArchitectError

LONG = "n" * 300  # longer than any file-name limit


@pytest.fixture
def umask():
    """Set a umask for one test."""
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tmp_name(target: str, middle: str) -> str:
    return f".{target}.{middle}.tmp"


# --------------------------------------------------------------------------- atomic_write


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic_write_text(tmp_path / "a.txt", "hi")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_text() == "hi"
    assert atomic_write_bytes(tmp_path / "new" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "new"]


def test_a_failed_write_leaves_nothing_and_names_the_file(tmp_path):
    def disk_full(path):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(
        NetArchitectError, match=r"cannot write '.*out\.png': No space left on device"
    ):
        atomic_write(tmp_path / "out.png", disk_full)
    assert list(tmp_path.iterdir()) == []

    def bug(path):
        raise ValueError("not an OSError: passed on as it is")

    with pytest.raises(ValueError, match="passed on"):
        atomic_write(tmp_path / "out.png", bug)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_targets(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain.txt").write_text("x")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NetArchitectError, match=r"cannot write '.*folder'"):
        atomic_write_text(tmp_path / "folder", "x")
    with pytest.raises(NetArchitectError, match=r"cannot write '.*plain\.txt/a\.txt'"):
        atomic_write_text(tmp_path / "plain.txt" / "a.txt", "x")
    with pytest.raises(NetArchitectError, match="is not a regular file; it is not replaced"):
        atomic_write_text(tmp_path / "pipe", "x")
    assert stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "pipe", "plain.txt"]


def test_a_long_name_still_gets_a_temporary_name(tmp_path):
    name = "w" * 240 + ".safetensors"
    assert atomic_write_text(tmp_path / name, "x").read_text() == "x"


# --------------------------------------------------------------------------- stale temporaries


def test_stale_temporaries_are_removed_by_the_next_write(tmp_path, monkeypatch):
    host = socket.gethostname()
    old = time.time() - 2 * _io.STALE_AFTER_S
    names = {
        "killed": _tmp_name("w.st", f"{host}.{_dead_pid()}.0123abcd"),
        "ours": _tmp_name("w.st", f"{host}.{os.getpid()}.0123abcd"),
        "alive": _tmp_name("w.st", f"{host}.{os.getppid()}.0123abcd"),
        "other_host_fresh": _tmp_name("w.st", "elsewhere.12.0123abcd"),
        "other_host_old": _tmp_name("w.st", "elsewhere.13.0123abcd"),
        "legacy_old": _tmp_name("w.st", "k2j3h4"),
        "other_target": _tmp_name("v.st", f"{host}.{_dead_pid()}.0123abcd"),
    }
    for key, name in names.items():
        (tmp_path / name).write_text(key)
    for key in ("other_host_old", "legacy_old"):
        os.utime(tmp_path / names[key], (old, old))
    atomic_write_text(tmp_path / "w.st", "new")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {
        "w.st",
        *(names[k] for k in ("ours", "alive", "other_host_fresh", "other_target")),
    }


def test_a_temporary_of_another_user_is_kept(tmp_path, monkeypatch):
    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    name = _tmp_name("w.st", f"{socket.gethostname()}.4242.0123abcd")
    (tmp_path / name).write_text("theirs")
    monkeypatch.setattr(_io.os, "kill", denied)
    atomic_write_text(tmp_path / "w.st", "new")
    assert (tmp_path / name).exists()
    assert not _io._is_stale(tmp_path / "gone.tmp", "legacy")  # vanished meanwhile


# --------------------------------------------------------------------------- check_readable


def test_check_readable_accepts_files(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\n")
    (tmp_path / "b.npz").write_bytes(b"\x00\xff")
    assert check_readable(tmp_path / "a.yaml", text=True) == tmp_path / "a.yaml"
    assert check_readable(str(tmp_path / "b.npz")) == tmp_path / "b.npz"


@pytest.mark.parametrize(
    ("make", "text", "message"),
    [
        (lambda p: None, False, r"spec '.*f' does not exist"),
        (lambda p: p.mkdir(), False, "is a directory, not a file"),
        (lambda p: os.mkfifo(p), False, "is not a regular file"),
        (lambda p: p.write_bytes(b""), True, "is empty"),
        (lambda p: p.write_bytes(b" \n\t"), True, "is empty"),
        (lambda p: p.write_bytes(b"caf\xe9"), True, r"is not UTF-8 text \(byte 0xe9 at offset 3\)"),
        (lambda p: p.write_bytes(b"a\x00b"), True, r"is not text \(it holds NUL bytes\)"),
        (lambda p: p.write_bytes(b"x" * 11), True, "is larger than 0 MiB"),
    ],
)
def test_check_readable_refusals(tmp_path, monkeypatch, make, text, message):
    monkeypatch.setattr(_io, "MAX_TEXT_BYTES", 10)
    path = tmp_path / "f"
    make(path)
    with pytest.raises(NetArchitectError, match=message):
        check_readable(path, "spec", text=text)


def test_check_readable_os_errors(tmp_path):
    with pytest.raises(NetArchitectError, match="cannot read file '.*': File name too long"):
        check_readable(tmp_path / LONG)


# --------------------------------------------------------------------------- check_writable


def test_check_writable_accepts_and_leaves_nothing(tmp_path):
    assert check_writable(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"
    assert check_writable(str(tmp_path / "new" / "deeper" / "w.safetensors"))
    (tmp_path / "exists.png").write_text("old")
    assert check_writable(tmp_path / "exists.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.png"]


def test_check_writable_refusals(tmp_path, monkeypatch):
    (tmp_path / "plain.txt").write_text("x")
    os.mkfifo(tmp_path / "pipe")
    cases = [
        ("", "--plot: an empty path is not a file name"),
        (tmp_path, "is a directory, not a file name"),
        (tmp_path / "pipe", "is not a regular file"),
        (tmp_path / "plain.txt" / "a.png", r"'.*plain\.txt' is not a directory"),
        (tmp_path / LONG, "File name too long"),
        ("/proc/netarchitect-test.png", r"cannot write '/proc/netarchitect-test\.png'"),
    ]
    for path, message in cases:
        with pytest.raises(NetArchitectError, match=message):
            check_writable(path, "--plot")
    monkeypatch.setattr(_io.os, "access", lambda path, mode: False)
    with pytest.raises(NetArchitectError, match=r"'.*' is not writable"):
        check_writable(tmp_path / "missing" / "a.png")


def test_check_writable_dir(tmp_path, monkeypatch):
    (tmp_path / "plain.txt").write_text("x")
    assert check_writable_dir(tmp_path) == tmp_path
    assert check_writable_dir(str(tmp_path / "runs" / "deep")) == tmp_path / "runs" / "deep"
    assert not (tmp_path / "runs").exists()
    for path, message in [
        ("  ", "--out: an empty path is not a directory name"),
        (tmp_path / "plain.txt", r"'.*plain\.txt' is not a directory"),
        (tmp_path / "plain.txt" / "runs", r"'.*plain\.txt' is not a directory"),
        (tmp_path / LONG / "runs", "File name too long"),
    ]:
        with pytest.raises(NetArchitectError, match=message):
            check_writable_dir(path, "--out")
    monkeypatch.setattr(_io.os, "access", lambda path, mode: False)
    with pytest.raises(NetArchitectError, match="is not writable"):
        check_writable_dir(tmp_path, "--out")


def test_a_stale_temporary_that_cannot_be_removed_does_not_block_the_write(tmp_path, monkeypatch):
    name = _tmp_name("w.st", f"{socket.gethostname()}.{_dead_pid()}.0123abcd")
    (tmp_path / name).write_text("stale")
    real_unlink = type(tmp_path).unlink

    def unlink(self, missing_ok=False):
        if self.name == name:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(type(tmp_path), "unlink", unlink)
    assert atomic_write_text(tmp_path / "w.st", "new").read_text() == "new"
    assert (tmp_path / name).exists()


def test_save_png_writes_atomically_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = _io.save_png(fig, tmp_path / "sub" / "plot.png", dpi=50)
    assert out.read_bytes()[:4] == b"\x89PNG" and not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in out.parent.iterdir()) == ["plot.png"]
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        _io.save_png(fig, tmp_path / "bad.png", dpi=-1)  # savefig refuses: nothing left behind
    assert not plt.fignum_exists(fig.number)
    assert not (tmp_path / "bad.png").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
