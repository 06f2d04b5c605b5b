"""Reading YAML (and JSON, its subset) from untrusted files within fixed bounds.

``yaml.safe_load`` refuses object tags, but two inputs still hurt: nesting hundreds of
levels deep (its composer recurses, so Python's stack overflows) and aliases to aliases
(a 600-byte "billion laughs" file names 9⁹ values; walking them exhausts memory). One
pass over the parser's event stream — iterative, O(size of the text) — measures the
deepest nesting and the number of values the document stands for once every alias is
expanded, and refuses the document before it is composed when either exceeds its bound.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import SpecError

__all__ = ["MAX_DEPTH", "MAX_TEXT_BYTES", "MAX_VALUES", "check_data_bounds", "safe_load"]

#: Deepest nesting of mappings and sequences a document may have.
MAX_DEPTH = 64
#: Values (scalars and collections) a document may stand for, aliases expanded.
MAX_VALUES = 1_000_000
#: Longest text read (a spec is kilobytes; 32 MiB leaves room for generated ones).
MAX_TEXT_BYTES = 32 * 2**20

_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _mark(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def check_bounds(text: str, where: str) -> None:
    """Raise :class:`SpecError` if ``text`` nests deeper than :data:`MAX_DEPTH` or expands to
    more than :data:`MAX_VALUES` values (YAML syntax errors are left to the loader)."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = []  # [anchor, values so far] per open collection
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _OPEN):
            stack.append([event.anchor, 1])
            if len(stack) > MAX_DEPTH:
                raise SpecError(f"{where}: nested deeper than {MAX_DEPTH} levels{_mark(event)}")
            continue
        if isinstance(event, _CLOSE):
            anchor, size = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        if stack:
            stack[-1][1] += size
            if stack[-1][1] > MAX_VALUES:
                raise SpecError(f"{where}: expands to more than {MAX_VALUES:,} values "
                                f"(aliases of aliases){_mark(event)}")
        else:
            total += size
    if total > MAX_VALUES:  # pragma: no cover - a root scalar/alias stream is tiny
        raise SpecError(f"{where}: expands to more than {MAX_VALUES:,} values")


def check_data_bounds(data: Any, where: str = "spec") -> None:
    """The same bounds for data built in Python (a dict may share or even contain itself)."""
    stack = [(data, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise SpecError(f"{where}: has more than {MAX_VALUES:,} values (or refers to itself)")
        if isinstance(value, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise SpecError(f"{where}: nested deeper than {MAX_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)


def safe_load(text: str, where: str = "spec") -> Any:
    """``yaml.safe_load(text)`` within the bounds above; a :class:`SpecError` naming
    ``where`` (and the line) for malformed, too deep or too large documents."""
    if len(text) > MAX_TEXT_BYTES:
        raise SpecError(f"{where}: {len(text):,} characters is more than the "
                        f"{MAX_TEXT_BYTES:,} a spec may have")
    try:
        check_bounds(text, where)
        return yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{where}: malformed YAML/JSON{at}: {problem}") from None
