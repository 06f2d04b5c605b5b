"""The settings of one search run, shared by the driver and its worker processes (``run.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..errors import NetArchitectError
from .constraints import Budget
from .objectives import Objective, parse_objectives
from .space import SearchSpace
from .tasks import SearchTask, get_task, load_npz_task

__all__ = ["RUN_FILE", "RunConfig", "packaged_space"]

RUN_FILE = "run.json"


def packaged_space(name: str) -> Path:
    """Path of a space shipped with the package (``default_space.yaml``, ``mlp_space.yaml``)."""
    return Path(str(resources.files("netarchitect.search").joinpath(name)))


@dataclass
class RunConfig:
    """Everything a worker needs to join a study; JSON-serialisable."""

    study: str
    storage: str
    run_dir: str
    task: str = "digits"
    data: str | None = None
    space: str | None = None
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "macs"])
    budget: dict[str, Any] = field(default_factory=dict)
    trials: int = 40
    timeout: float | None = None
    seed: int = 0
    sampler: str = "auto"
    prune: bool = True
    proxy: str | None = None
    proxy_keep: float = 0.5
    heartbeat_interval: int = 2
    grace_period: int = 10
    max_rejections: int = 200
    max_repeats: int = 50

    # ------------------------------------------------------------------ derived objects

    def load_task(self) -> SearchTask:
        return load_npz_task(self.data) if self.data else get_task(self.task)

    def space_path(self, task: SearchTask) -> Path:
        return Path(self.space) if self.space else packaged_space(task.default_space)

    def load_space(self, task: SearchTask) -> SearchSpace:
        return SearchSpace.from_spec(
            self.space_path(task),
            variables={"num_classes": task.num_classes},
            inputs={"x": task.input_shape},
        )

    def parsed_objectives(self) -> list[Objective]:
        return parse_objectives(self.objectives)

    def parsed_budget(self) -> Budget:
        return Budget(**self.budget)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.parsed_objectives()]

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path else Path(self.run_dir) / RUN_FILE
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> RunConfig:
        path = Path(run_dir)
        path = path if path.suffix == ".json" else path / RUN_FILE
        if not path.is_file():
            raise NetArchitectError(f"{path.parent}: not a search run directory (no {RUN_FILE})")
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError, OSError) as exc:
            raise NetArchitectError(f"{path}: unreadable run settings ({exc})") from None
