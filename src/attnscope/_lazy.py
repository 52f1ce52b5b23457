"""Lazy package exports (PEP 562): a package lists its public names and the submodule each comes from,
and the submodule (with torch, transformers or matplotlib behind it) is imported on first use. This keeps
``import attnscope.<package>.cli`` cheap, so ``attnscope <command> --help`` starts fast."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``. ``exports`` maps a public name to ``".module"`` (the same
    name in that submodule) or ``".module:attr"``. A submodule name (``package.figures``) is imported too."""

    def __getattr__(name: str) -> Any:
        spec = exports.get(name)
        if spec is not None:
            module, _, attr = spec.partition(":")
            value = getattr(importlib.import_module(module, package), attr or name)
        else:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        setattr(importlib.import_module(package), name, value)  # cache: later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(importlib.import_module(package))))

    return __getattr__, __dir__
