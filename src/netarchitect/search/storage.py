"""Study storage: an embedded SQLite file in the run directory, or any Optuna RDB URL.

Why SQLite (and not Optuna's ``JournalStorage`` file backend) for the embedded
default: only the RDB storage implements Optuna's heartbeat, so a trial left
RUNNING by a worker killed with ``kill -9`` is detected (no heartbeat for
``grace_period`` seconds), marked FAIL and re-queued with the same parameters
by ``RetryHeartbeatStaleTrialCallback`` — the same code path as PostgreSQL, so
local and multi-machine studies behave identically. SQLite is made safe for
several local worker processes by

* write-ahead logging (``PRAGMA journal_mode=WAL``, persistent in the file):
  readers never block the writer, and a ``kill -9`` loses at most the
  uncommitted transaction of the killed process;
* a 120 s busy timeout: a writer waits for the lock instead of failing with
  "database is locked" (Python's sqlite3 opens a transaction at the first write
  statement, so the lock is taken with the busy handler active);
* creating (or loading) the study once, with a retry, before any worker starts.

``tests/search/test_distributed.py`` proves it with two worker processes on one
file and with ``kill -9`` of a worker in the middle of a trial.
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from ..errors import NetArchitectError

__all__ = [
    "StorageError",
    "create_or_load_study",
    "default_url",
    "error_detail",
    "open_storage",
    "safe_url",
]

BUSY_TIMEOUT_S = 120
DB_NAME = "study.db"


class StorageError(NetArchitectError):
    """A storage URL cannot be opened, or its study does not match the run."""


def default_url(run_dir: str | Path) -> str:
    """The embedded storage of a run directory (``sqlite:///RUN_DIR/study.db``)."""
    return f"sqlite:///{Path(run_dir).resolve() / DB_NAME}"


_DB_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)


def error_detail(exc: BaseException) -> str:
    """The first line of the database's own message behind ``exc`` (SQLAlchemy wraps it)."""
    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
    text = str(getattr(cause, "orig", None) or cause or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def safe_url(url: str) -> str:
    """``url`` with any password hidden (for messages and reports)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show it as given  # noqa: BLE001
        return url


def _switch_to_wal(path: str) -> None:
    # Switching to WAL takes an exclusive lock, and SQLite reports SQLITE_BUSY at once
    # (without waiting out the busy timeout) when concurrent first openings collide:
    # check the mode first and retry the switch with backoff.
    for attempt in range(20):
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
        finally:
            con.close()
    raise StorageError(f"{path}: the database stayed locked while switching it to WAL mode")


def _prepare_sqlite(url: str, create: bool) -> None:
    """Check (and with ``create``, make) the SQLite file of ``url``; errors are one line."""
    path = sqlalchemy.engine.make_url(url).database
    if not path or path == ":memory:":
        return
    db = Path(path)
    if db.is_dir():
        raise StorageError(f"cannot open storage {safe_url(url)}: {path} is a directory")
    if not create and not db.is_file():
        raise StorageError(f"no study database at {path}")
    if not create:  # read an existing database as it is (no WAL files appear beside it)
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        _switch_to_wal(path)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open storage {safe_url(url)}: {error_detail(exc)}") from None


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = 2,
    grace_period: int = 10,
    max_retry: int = 2,
    create: bool = True,
) -> RDBStorage:
    """Open (creating its tables if needed) the Optuna RDB storage at ``url``.

    Heartbeats every ``heartbeat_interval`` s; a RUNNING trial silent for
    ``grace_period`` s is failed and retried (at most ``max_retry`` times);
    ``heartbeat_interval=None`` opens it for reading and bookkeeping only.
    ``create=False`` opens an existing storage only: a missing SQLite file is an
    error (not a new empty database) and no table is created.
    An unreachable or malformed URL, a directory or a file that is not a
    database is a one-line :class:`StorageError`.
    """
    try:
        dialect = sqlalchemy.engine.make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"--storage: {url!r} is not a database URL (e.g. postgresql://user:pw@host/db)"
        ) from None
    engine_kwargs: dict[str, Any] = {}
    if dialect == "sqlite":
        _prepare_sqlite(url, create)
        engine_kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    elif dialect == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    last = ""
    for attempt in range(3):  # concurrent first openings race on creating the schema
        try:
            with warnings.catch_warnings():  # heartbeats and retries are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period if heartbeat_interval else None,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retry
                    ),
                    skip_table_creation=not create,
                )
        except (
            sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError,
            ImportError,
            ValueError,
            OSError,
        ) as exc:
            last = error_detail(exc)
            if isinstance(exc, ImportError) and dialect == "postgresql":
                last += " (install the driver: pip install 'netarchitect[postgres]')"
            if not isinstance(exc, _DB_ERRORS) or not create:
                break
            time.sleep(0.3 * (attempt + 1))
    raise StorageError(f"cannot open storage {safe_url(url)}: {last}")


def create_or_load_study(
    storage: RDBStorage | str,
    name: str,
    directions: list[str],
    *,
    attrs: dict[str, Any] | None = None,
    attempts: int = 5,
) -> optuna.Study:
    """Create study ``name`` or load it if it exists (retrying a concurrent creation).

    An existing study must have the same values for the identity ``attrs`` (the
    objective names, the search space hash, ...) and the same ``directions``: a
    mismatch is a :class:`StorageError` telling the user to keep the settings or
    pick another ``--study``. (Attributes are set before trials are added, so a
    study never holds values of two different objective lists.)
    """
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            study = optuna.create_study(
                study_name=name, storage=storage, directions=directions, load_if_exists=True
            )
            break
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.OperationalError,
            optuna.exceptions.DuplicatedStudyError,
        ) as exc:  # a concurrent creator won the race
            last = exc
            time.sleep(0.2 * (attempt + 1))
    else:
        raise StorageError(f"cannot create or load study {name!r}: {last}")
    for key, value in (attrs or {}).items():
        stored = study.user_attrs.get(key)
        if stored is None:
            study.set_user_attr(key, value)
        elif stored != value:
            raise StorageError(
                f"study {name!r} was created with {key.replace('_', ' ')} {stored!r}, "
                f"not {value!r}; re-run with the same settings to continue it, "
                "or use another --study name"
            )
    have = [d.name.lower() for d in study.directions]
    if have != [d.lower() for d in directions]:
        raise StorageError(
            f"study {name!r} exists with objectives directions {have}, not {directions}; "
            "use another --study name"
        )
    return study
