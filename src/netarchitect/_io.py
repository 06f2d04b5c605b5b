"""Checked file access: inputs that can be read, outputs written atomically.

:func:`check_readable` and :func:`check_writable` test a path before any work is done
(the CLI runs them while parsing options). :func:`atomic_write` writes to a temporary
name in the same folder, then renames it.

The temporary file is ``.NAME.HOST.PID.RANDOM.tmp`` beside the target, created with the
usual permissions (``0666`` less the umask, as ``open()`` would). A write killed before
its rename leaves that file behind; the next write of the same target removes it (its
process is gone, or it is older than :data:`STALE_AFTER_S`). Failures to write are
:class:`~netarchitect.errors.NetArchitectError` naming the path.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import NetArchitectError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_readable",
    "check_writable",
    "check_writable_dir",
    "prepare_output_dir",
    "publish_output_dir",
    "save_png",
]

MAX_TEXT_BYTES = 64 * 2**20
"""Largest text input (a spec, a search space) read: specs are kilobytes."""

STALE_AFTER_S = 3600.0
"""A temporary file of another machine (or of an unknown writer) older than this is stale."""

_NAME_CHARS = 120
_OURS = re.compile(r"^(?P<host>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}$")


def _problem(path: Path, exc: OSError) -> NetArchitectError:
    return NetArchitectError(f"cannot write {str(path)!r}: {exc.strerror or exc}")


def check_readable(path: str | Path, what: str = "file", *, text: bool = False) -> Path:
    """Check that ``path`` is a regular file this process can read; ``what`` names it.

    With ``text=True`` it must also be non-empty UTF-8 text of at most
    :data:`MAX_TEXT_BYTES` without NUL bytes. Problems are one-line
    :class:`~netarchitect.errors.NetArchitectError`\\ s naming the file.
    """
    path = Path(path)
    name = f"{what} {str(path)!r}"
    try:
        if not path.exists():
            raise NetArchitectError(f"{name} does not exist")
        if path.is_dir():
            raise NetArchitectError(f"{name} is a directory, not a file")
        if not path.is_file():
            raise NetArchitectError(f"{name} is not a regular file")
        with path.open("rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1 if text else 1)
    except OSError as exc:
        raise NetArchitectError(f"cannot read {name}: {exc.strerror or exc}") from None
    if text:
        if len(data) > MAX_TEXT_BYTES:
            raise NetArchitectError(f"{name} is larger than {MAX_TEXT_BYTES // 2**20} MiB")
        if not data.strip():
            raise NetArchitectError(f"{name} is empty")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NetArchitectError(
                f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
            ) from None
        if b"\0" in data:
            raise NetArchitectError(f"{name} is not text (it holds NUL bytes)")
    return path


def _existing_folder(path: Path, label: str) -> Path:
    """The nearest existing ancestor of ``path``, which must be a folder."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NetArchitectError(
            f"{label}cannot write {str(path)!r}: {str(folder)!r} is not a directory"
        )
    return folder


def _checked_path(path: str | Path, what: str, kind: str) -> tuple[Path, str]:
    label = f"{what}: " if what else ""
    if not str(path).strip():
        raise NetArchitectError(f"{label}an empty path is not a {kind} name")
    return Path(path), label


def check_writable_dir(path: str | Path, what: str = "") -> Path:
    """Check that ``path`` is (or can be created as) a writable folder; nothing is created."""
    path, label = _checked_path(path, what, "directory")
    try:
        if path.exists() and not path.is_dir():
            raise NetArchitectError(f"{label}{str(path)!r} is not a directory")
        folder = path if path.is_dir() else _existing_folder(path, label)
    except OSError as exc:
        raise NetArchitectError(f"{label}{_problem(path, exc)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NetArchitectError(
            f"{label}cannot write in {str(path)!r}: {str(folder)!r} is not writable"
        )
    return path


def check_writable(path: str | Path, what: str = "") -> Path:
    """Check, before any work, that a file can be written at ``path``; ``what`` names the option.

    A folder, a device, a path under a file and an unwritable folder are one-line
    :class:`~netarchitect.errors.NetArchitectError`\\ s; nothing is left behind.
    """
    path, label = _checked_path(path, what, "file")
    try:
        if path.is_dir():
            raise NetArchitectError(f"{label}{str(path)!r} is a directory, not a file name")
        _refuse_special(path, label)
        folder = _existing_folder(path, label)
        if folder == path.parent:  # the real test: create (and remove) a file there
            _create_tmp(path).unlink()
        elif not os.access(folder, os.W_OK | os.X_OK):
            raise NetArchitectError(
                f"{label}cannot write {str(path)!r}: {str(folder)!r} is not writable"
            )
    except OSError as exc:
        raise NetArchitectError(f"{label}{_problem(path, exc)}") from None
    return path


def _refuse_special(path: Path, label: str = "") -> None:
    """A device, FIFO or socket is never replaced by a rename (think ``/dev/null`` as root)."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise NetArchitectError(f"{label}{str(path)!r} is not a regular file; it is not replaced")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name[:_NAME_CHARS]}."  # a long name still leaves room for the rest


def _create_tmp(path: Path) -> Path:
    host = socket.gethostname() or "host"
    while True:
        tmp = path.with_name(f"{_tmp_prefix(path)}{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return tmp


def _is_stale(tmp: Path, middle: str) -> bool:
    match = _OURS.match(middle)
    if match and match["host"] == socket.gethostname():
        pid = int(match["pid"])
        if pid == os.getpid():
            return False  # another thread of this process is writing it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by someone else
            return False
        return False
    try:
        return time.time() - tmp.stat().st_mtime > STALE_AFTER_S
    except OSError:  # already gone
        return False


def _remove_stale(path: Path) -> None:
    prefix = _tmp_prefix(path)
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        middle = tmp.name[len(prefix) : -len(".tmp")]
        if _is_stale(tmp, middle):
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # someone else's, in a folder we may write to: leave it
                pass


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``.

    Missing parent folders are created. Nothing is left at ``path`` (or beside it) if
    ``write`` raises; an ``OSError`` (no such folder, not writable, disk full, ``path``
    is a folder) becomes a :class:`~netarchitect.errors.NetArchitectError` naming ``path``.
    """
    path = Path(path)
    try:
        _refuse_special(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        tmp = _create_tmp(path)
        mode = stat.S_IMODE(tmp.stat().st_mode)  # 0666 less the umask, as open() gives
    except OSError as exc:
        raise _problem(path, exc) from None
    try:
        write(tmp)
        os.chmod(tmp, mode)  # a writer may replace the file (safetensors creates it 0600)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _problem(path, exc) from None
        raise
    return path


def save_png(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG (:func:`atomic_write`; extra
    keywords go to ``savefig``), then close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", **savefig))
    finally:
        plt.close(fig)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def prepare_output_dir(out: Path, option: str = "--out") -> Path:
    """A fresh hidden folder to write a command's outputs into, in ``out``'s nearest existing
    ancestor (so that a failure creates nothing); ``out`` must not exist or be an empty
    folder. :func:`publish_output_dir` moves it into place when the work is complete."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NetArchitectError(f"{option} {out}: exists and is not an empty folder; choose a new one")
    ancestor = out.absolute().parent
    while not ancestor.is_dir():
        ancestor = ancestor.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=ancestor))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # as a plain mkdir would make it, not mkdtemp's 0700
    return tmp


def publish_output_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out`` (creating its parents only now)."""
    if out.is_dir():
        out.rmdir()  # empty (checked before any work)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
