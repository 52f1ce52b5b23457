"""Optional dependencies: import one where it is used, or say in one line which extra installs it.

The core install (capture, traces, analyses, static figures, the CLI) needs none of these. Each heavy,
single-purpose package belongs to an extra of ``pyproject.toml``; the place that uses it calls
:func:`require` inside the function that needs it (never at module top level), so that everything
else works without it::

    umap = require("umap", "umap", "head_projection(method='umap')")

A missing package raises :class:`MissingDependencyError`, an :class:`~attnscope.errors.AttnscopeError`
(the CLI prints it as one line and exits with code 2) that is also an ``ImportError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .errors import AttnscopeError

__all__ = ["MissingDependencyError", "require", "lazy_module", "available", "DISTRIBUTIONS"]

# Top-level module -> the name pip installs it under (where they differ, the message must say the latter).
DISTRIBUTIONS: dict[str, str] = {
    "umap": "umap-learn",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
}


class MissingDependencyError(AttnscopeError, ImportError):
    """An optional package is not installed (or cannot be imported); the message names the extra."""


def _distribution(module_name: str) -> str:
    top = module_name.split(".")[0]
    return DISTRIBUTIONS.get(top, top)


def _is_missing(exc: ImportError, module_name: str) -> bool:
    """True if ``exc`` says ``module_name`` itself (or a parent package of it) is absent."""
    name = getattr(exc, "name", None)
    if not name:
        return False
    parts = module_name.split(".")
    return name in {".".join(parts[: i + 1]) for i in range(len(parts))}


def require(module_name: str, extra: str, what_for: str, alternative: str | None = None) -> ModuleType:
    """Import ``module_name`` and return it; if it is not installed, raise a one-line
    :class:`MissingDependencyError`: "<what_for> needs <package>, which is not installed: pip install
    'attnscope[<extra>]'", followed by " (<alternative>)" when one is given (what works without it).

    A package that is installed but fails to import (a broken dependency of its own) gets the same error
    type, with the underlying reason and the same install command.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        dist = _distribution(module_name)
        hint = f"pip install 'attnscope[{extra}]'" + (f" ({alternative})" if alternative else "")
        if _is_missing(exc, module_name):
            raise MissingDependencyError(f"{what_for} needs {dist}, which is not installed: {hint}") from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingDependencyError(f"{what_for} needs {dist}, which is installed but does not import ({reason}); "
                                     f"reinstall it: {hint}") from exc


def available(module_name: str) -> bool:
    """Whether ``module_name`` can be imported (imports it if so)."""
    try:
        importlib.import_module(module_name)
    except ImportError:
        return False
    return True


class _LazyModule:
    """Stands in for a module at module level; the first attribute access imports it via :func:`require`."""

    def __init__(self, module_name: str, extra: str, what_for: str):
        self._args = (module_name, extra, what_for)
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy/pickle/inspect probes must not import the package
            raise AttributeError(attr)
        if self._module is None:
            self._module = require(*self._args)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._args[0]!r} (extra {self._args[1]!r})>"


def lazy_module(module_name: str, extra: str, what_for: str) -> Any:
    """A module-level name for an optional package used by many functions of one module: nothing is
    imported until an attribute is read (``pa.table(...)``), which then calls :func:`require`. Type
    annotations naming it (``pa.Table``) stay unevaluated under ``from __future__ import annotations``."""
    return _LazyModule(module_name, extra, what_for)
