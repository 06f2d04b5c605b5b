"""`make bench`: run every benchmark module, then refresh the README performance table."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from benchmarks.harness import render_markdown_table

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- performance-table:start -->", "<!-- performance-table:end -->"


def update_readme(readme: Path = ROOT / "README.md", results_dir: Path = ROOT / "benchmarks" / "results") -> None:
    """Replace the README's performance table with one rendered from the results JSON files."""
    text = readme.read_text(encoding="utf-8")
    table = render_markdown_table(results_dir)
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    readme.write_text(pattern.sub(f"{START}\n{table}{END}", text), encoding="utf-8")


def main(names: list[str]) -> int:
    modules = names or sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    for name in modules:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    update_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
