"""`make demo`: build and summarise every example spec (until `netarchitect design` lands)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from .cli import node_table
from .network import build
from .spec import spec_hash

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "specs"


def main(argv: list[str] | None = None) -> int:
    """Build each example spec on the CPU and print its node table; returns an exit status."""
    console = Console()
    paths = sorted(EXAMPLES.glob("*.yaml")) if not argv else [Path(a) for a in argv]
    if not paths:
        console.print(f"no example specs found in {EXAMPLES}")
        return 1
    for path in paths:
        model = build(path, seed=0)
        title = f"{path.name}: {model.spec.description or model.spec.name}  (spec {spec_hash(model.spec)[:12]})"
        console.print(node_table(model, title))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
