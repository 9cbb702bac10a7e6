"""Lazy package exports: a package's public names load their submodule on first access (PEP 562).

A study stage then loads only the submodules it uses, so a stage's recorded code fingerprint (the
``bmstudy`` modules its kernel loaded) names only what it really depends on.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str],
                 submodules: tuple[str, ...]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : mapping
        Public name -> submodule (relative name) that defines it.
    submodules : tuple of str
        Submodules reachable as attributes (``bmstudy.evaluation.voxel``).

    Returns
    -------
    (getattr, dir) : the module-level ``__getattr__`` and ``__dir__`` functions.
    """

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(submodules))

    return __getattr__, __dir__


def exports_of(spec: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """``{"voxel": ("case_metrics", ...)}`` -> ``{"case_metrics": "voxel", ...}``."""
    return {name: mod for mod, names in spec.items() for name in names}
