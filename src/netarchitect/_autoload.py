"""Import every module of a package so its registrations run, and re-export ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def import_submodules(package_name: str, package_path: list[str], namespace: dict[str, Any]) -> None:
    """Import each submodule of ``package_name`` and copy its ``__all__`` names into ``namespace``.

    A name equal to a submodule's name (``models.resnet`` the builder vs the module) is
    not copied, so ``import package.name`` keeps meaning the module.
    """
    exported = namespace.setdefault("__all__", [])
    infos = sorted(pkgutil.iter_modules(package_path), key=lambda i: i.name)
    submodules = {info.name for info in infos}
    for info in infos:
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package_name}.{info.name}")
        for name in getattr(module, "__all__", ()):
            if name in submodules:
                continue
            namespace[name] = getattr(module, name)
            if name not in exported:
                exported.append(name)
