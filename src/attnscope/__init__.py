"""attnscope: capture, analyse and visualise attention in Transformer and seq2seq models.

The curated API, importable from the top level::

    import attnscope
    lm = attnscope.load_model("minilm")
    trace = attnscope.capture(lm, "Attention is all you need.")          # or input_ids=[...]
    attnscope.run_analysis("rollout", trace)

``import attnscope`` is cheap: torch, transformers and matplotlib are imported on first use of a
name that needs them (PEP 562 module ``__getattr__``), so ``attnscope --help`` starts fast.
``attnscope.capture`` is also the name of the capture sub-package; that module is callable too
(``attnscope.capture(lm, text)`` and ``attnscope.capture.capture(lm, text)`` are the same call).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import AttnscopeError, CaptureError, InputError, ModelLoadError, TraceFormatError, UnknownNameError

# name -> (module, attribute): resolved on first access, then cached in the module's namespace
_LAZY: dict[str, tuple[str, str]] = {
    "load_model": (".models", "load_model"),
    "capture": (".capture", "capture"),  # the callable sub-package (capture.extend etc. are its attributes)
    "capture_batch": (".capture.api", "capture_batch"),
    "generate": (".capture.generation", "generate"),
    "AttentionTrace": (".trace", "AttentionTrace"),
    "Tokens": (".trace", "Tokens"),
    "run_analysis": (".analysis.registry", "run_analysis"),
    "list_analyses": (".analysis.registry", "list_analyses"),
}

__all__ = [
    "load_model", "capture", "capture_batch", "generate", "AttentionTrace", "Tokens", "run_analysis",
    "list_analyses", "show", "AttnscopeError", "InputError", "UnknownNameError", "TraceFormatError",
    "ModelLoadError", "CaptureError", "__version__",
]


def show(trace, path="attnscope_trace.html", **limits):
    """Write ``trace`` as a standalone, offline explorer page; returns its path
    (see :func:`attnscope.render.notebook.show`)."""
    from .render.notebook import show as _show

    return _show(trace, path, **limits)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("attnscope")  # the one place: pyproject.toml's [project] version
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = importlib.import_module(module, __name__)
        value = value if name == "capture" else getattr(value, attr)
    else:
        raise AttributeError(f"module 'attnscope' has no attribute {name!r}")
    if name != "capture":  # importing attnscope.capture sets that attribute to the (callable) sub-package
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    # the curated names, plus the sub-packages imported so far (attnscope.render, attnscope.analysis, …)
    return sorted(set(__all__) | {k for k, v in globals().items() if isinstance(v, ModuleType) and k[0] != "_"})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .analysis.registry import list_analyses, run_analysis
    from .capture.api import capture, capture_batch
    from .capture.generation import generate
    from .models import load_model
    from .trace import AttentionTrace, Tokens

    __version__: str
