"""Storage: the embedded SQLite file (WAL, busy timeout), URLs, create-or-load with checks."""

from __future__ import annotations

import sqlite3
import threading

import optuna
import pytest

from netarchitect.search.storage import (
    StorageError,
    create_or_load_study,
    default_url,
    open_storage,
    safe_url,
)


def test_embedded_storage_is_a_wal_sqlite_file_in_the_run_directory(tmp_path):
    url = default_url(tmp_path / "run")
    assert url == f"sqlite:///{(tmp_path / 'run' / 'study.db').resolve()}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=3)
    assert storage.get_heartbeat_interval() == 1
    con = sqlite3.connect(tmp_path / "run" / "study.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    open_storage("sqlite:///:memory:")  # nothing to prepare


def test_bad_urls_are_one_line_storage_errors():
    with pytest.raises(StorageError, match="not a database URL"):
        open_storage("not a url")
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg://user:secret@127.0.0.1:1/db")
    message = str(info.value)
    assert message.startswith("cannot open storage postgresql+psycopg://user:***@127.0.0.1:1/db")
    assert "secret" not in message and "\n" not in message
    with pytest.raises(StorageError, match="cannot open storage"):
        open_storage("nosuchdialect://host/db")


def test_safe_url_hides_passwords():
    assert safe_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert safe_url("::") == "::"


def test_create_or_load_checks_directions_and_identity(tmp_path):
    storage = open_storage(default_url(tmp_path), heartbeat_interval=None)
    study = create_or_load_study(
        storage, "s", ["maximize", "minimize"], attrs={"space_hash": "abc"}
    )
    study.tell(study.ask(), [0.5, 10.0])
    again = create_or_load_study(
        storage, "s", ["maximize", "minimize"], attrs={"space_hash": "abc"}
    )
    assert len(again.trials) == 1 and again.user_attrs["space_hash"] == "abc"
    with pytest.raises(StorageError, match="directions"):
        create_or_load_study(storage, "s", ["maximize"])
    with pytest.raises(StorageError, match="created with space hash 'abc', not 'xyz'"):
        create_or_load_study(storage, "s", ["maximize", "minimize"], attrs={"space_hash": "xyz"})


def test_concurrent_creation_gives_one_study(tmp_path):
    url = default_url(tmp_path)
    studies, errors = [], []

    def create() -> None:
        try:
            studies.append(create_or_load_study(open_storage(url), "race", ["maximize"]))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(studies) == 4
    assert len(optuna.get_all_study_names(open_storage(url))) == 1


def test_create_or_load_gives_up_after_repeated_failures(monkeypatch):
    import sqlalchemy.exc

    def always_fails(**_kwargs):
        raise sqlalchemy.exc.OperationalError("stmt", {}, Exception("database is down"))

    monkeypatch.setattr(optuna, "create_study", always_fails)
    with pytest.raises(StorageError, match="cannot create or load study 'x'"):
        create_or_load_study("sqlite:///:memory:", "x", ["maximize"], attempts=2)


def test_a_missing_database_driver_is_a_storage_error():
    with pytest.raises(
        StorageError, match="cannot open storage mysql://u@h/db: Failed to import DB access module"
    ):
        open_storage("mysql://u@h/db")


def test_missing_postgres_driver_names_the_extra():
    with pytest.raises(StorageError, match=r"netarchitect\[postgres\]"):
        open_storage("postgresql+pg8000://user:pw@127.0.0.1:1/db")


def test_unusable_sqlite_paths_are_one_line_storage_errors(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(StorageError, match=r"folder is a directory$"):
        open_storage(f"sqlite:///{tmp_path / 'folder'}")
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 40)
    with pytest.raises(StorageError, match="notes.txt: file is not a database$"):
        open_storage(f"sqlite:///{text}")
    assert text.read_text() == "not a database\n" * 40
    with pytest.raises(
        StorageError, match=r"cannot open storage sqlite:////proc/na/x\.db: \[Errno"
    ):
        open_storage("sqlite:////proc/na/x.db")
    missing = tmp_path / "run" / "study.db"
    with pytest.raises(StorageError, match="no study database at"):
        open_storage(f"sqlite:///{missing}", create=False)
    assert not missing.parent.exists()  # reading creates nothing
    plain = tmp_path / "plain.db"  # a SQLite file without Optuna's tables, opened to read
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StorageError, match="no such table"):
        open_storage(f"sqlite:///{plain}", heartbeat_interval=None, create=False)
    tables = sqlite3.connect(plain).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("t",)]  # no table was created in it


def test_a_study_keeps_its_objectives(tmp_path):
    storage = open_storage(default_url(tmp_path), heartbeat_interval=None)
    create_or_load_study(
        storage, "s", ["maximize", "minimize"], attrs={"objectives": "accuracy,macs"}
    )
    with pytest.raises(
        StorageError,
        match="study 's' was created with objectives 'accuracy,macs', not 'accuracy,params'; re-run",
    ):
        create_or_load_study(
            storage, "s", ["maximize", "minimize"], attrs={"objectives": "accuracy,params"}
        )
