"""Training past one process: plans derived from block roles (FSDP2, tensor and pipeline
parallel on ``torch.distributed``), a memory/compute planner, and ``netarchitect train``.

Every submodule's ``__all__`` is re-exported here (``na.parallel.parallelize``), loaded on
first use so that ``import netarchitect.parallel.train_command`` (the CLI) stays cheap.
"""

from typing import Any

from .._autoload import import_submodules


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    import_submodules(__name__, __path__, globals())
    if name in globals():
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
