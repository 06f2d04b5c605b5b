"""netarchitect: design, build, measure, search and optimise neural-network architectures.

The public API lives here; everything else is reachable from its subpackages.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import (
    BudgetError,
    NetArchitectError,
    RegistryError,
    ShapeError,
    SpecError,
    UnknownLayerError,
)
from .factory import create_model
from .init import InitPolicy, InitRule, initialize, materialize
from .network import Network, build, infer_shapes
from .registry import (
    Example,
    add_loader,
    get_block,
    list_blocks,
    list_models,
    register_block,
    register_model,
)
from .spec import InputSpec, NetworkSpec, NodeSpec, load_spec, save_spec, spec_hash

__version__ = "0.1.0"


def _load_library() -> None:
    """Import the layers and models so their blocks and models are registered."""
    import_module("netarchitect.layers")
    import_module("netarchitect.graph")  # the pyg_conv block
    import_module("netarchitect.models")


add_loader(_load_library)

# Names served lazily from subpackages (keeps `import netarchitect` light).
_LAZY = {
    "check_module": "netarchitect.testing",
    "assert_conformance": "netarchitect.testing",
    "available_checks": "netarchitect.testing",
    "count_params": "netarchitect.analysis",
    "count_flops": "netarchitect.analysis",
    "memory": "netarchitect.analysis",
    "latency": "netarchitect.analysis",
    "summary": "netarchitect.analysis",
    "diagnose": "netarchitect.analysis",
    "generate": "netarchitect.generation",
    "from_hf": "netarchitect.interop",
    "to_hf": "netarchitect.interop",
}

__all__ = [  # noqa: PLE0604 (*_LAZY adds the lazily imported names: strings)
    "BudgetError",
    "Example",
    "InitPolicy",
    "InitRule",
    "InputSpec",
    "NetArchitectError",
    "Network",
    "NetworkSpec",
    "NodeSpec",
    "RegistryError",
    "UnknownLayerError",
    "ShapeError",
    "SpecError",
    "__version__",
    "build",
    "create_model",
    "get_block",
    "infer_shapes",
    "initialize",
    "list_blocks",
    "list_models",
    "load_spec",
    "materialize",
    "register_block",
    "register_model",
    "save_spec",
    "spec_hash",
    *_LAZY,
]


#: Subpackages reachable as attributes (``na.analysis.count_flops``), imported on first use.
_SUBPACKAGES = (
    "analysis", "extend", "generation", "generative", "graph", "interop", "layers", "meta",
    "models", "optimize", "parallel", "search", "testing",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return import_module(f"netarchitect.{name}")
    raise AttributeError(f"module 'netarchitect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})
