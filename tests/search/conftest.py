"""Shared helpers for the search tests: a tiny moons space, run configs, the CLI, PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from netarchitect.search.config import RunConfig
from netarchitect.search.storage import default_url

REPO = Path(__file__).resolve().parents[2]

TINY_SPACE = """
name: tiny
nodes:
  - {id: fc, block: linear, params: {out_features: !choice [4, 8, 16]}}
  - {id: act, block: !choice [relu, tanh]}
  - !repeat
    times: !int [0, 1]
    body:
      - {id: fc2, block: linear, params: {out_features: 8}}
      - {id: act2, block: relu}
  - {id: head, block: linear, params: {out_features: $num_classes}}
outputs: [head]
train:
  lr: !float {low: 1.0e-2, high: 5.0e-2, log: true}
  batch_size: 64
  epochs: !int [2, 4]
  patience: 10
"""


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_space.yaml"
    path.write_text(TINY_SPACE)
    return path


def make_config(tmp_path: Path, space: Path | str | None, **overrides) -> RunConfig:
    """A run of the moons task in ``tmp_path/run`` with the embedded SQLite storage."""
    run_dir = tmp_path / overrides.pop("study", "run")
    fields = {
        "study": run_dir.name,
        "storage": default_url(run_dir),
        "run_dir": str(run_dir),
        "task": "moons",
        "space": str(space) if space else None,
        "trials": 4,
        "seed": 0,
        "heartbeat_interval": 1,
        "grace_period": 2,
    }
    fields.update(overrides)
    return RunConfig(**fields)


@pytest.fixture
def config_factory(tmp_path: Path, tiny_space: Path):
    def factory(**overrides) -> RunConfig:
        return make_config(tmp_path, overrides.pop("space", tiny_space), **overrides)

    return factory


def _start_postgres() -> str | None:
    script = REPO / "scripts" / "start_postgres.sh"
    env = {**os.environ, "NETARCHITECT_PG_NO_INSTALL": "1"}
    try:
        out = subprocess.run(
            ["bash", str(script)], check=False, capture_output=True, text=True, timeout=120, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    return (
        line.split("=", 1)[1] if line.startswith("export NETARCHITECT_TEST_POSTGRES_URL=") else None
    )


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """NETARCHITECT_TEST_POSTGRES_URL, or a server started by scripts/start_postgres.sh."""
    url = os.environ.get("NETARCHITECT_TEST_POSTGRES_URL") or _start_postgres()
    if not url:
        pytest.skip(
            "no PostgreSQL: NETARCHITECT_TEST_POSTGRES_URL is unset and scripts/start_postgres.sh "
            "could not start a server (PostgreSQL not installed)"
        )
    return url


@pytest.fixture
def worker_command():
    """The command line of a worker process of a saved run."""

    def command(config: RunConfig) -> list[str]:
        return [
            sys.executable,
            "-m",
            "netarchitect.search.worker",
            str(Path(config.run_dir) / "run.json"),
        ]

    return command


@pytest.fixture
def run_cli(capsys):
    """Run ``netarchitect ARGS`` through an argparse parser holding our sub-commands, handling
    errors as ``netarchitect.cli.main`` does (one line on stderr, exit status 2)."""
    import argparse

    from rich.console import Console

    from netarchitect.errors import NetArchitectError
    from netarchitect.search.commands import register

    def run(argv: list[str]) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="netarchitect")
        register(parser.add_subparsers(dest="command"))
        try:
            args = parser.parse_args(argv)
            code = args.handler(args, Console(width=200))
        except SystemExit as exc:
            code = int(exc.code or 0)
        except NetArchitectError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
        out, err = capsys.readouterr()
        return code, out, err

    return run
