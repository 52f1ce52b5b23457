"""The analysis registry: every analysis is a pure function ``(trace, **params) -> result``.

Adding an analysis is one file: decorate the function with :func:`register_analysis`; the CLI's
choices, the web explorer's menu and the API schema read :func:`list_analyses` / :func:`analysis_info`.
An unknown name raises :class:`~attnscope.errors.UnknownNameError`, whose message lists the valid names.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InputError, UnknownNameError

Payload = str  # "weights" (full maps) or "stats" (row statistics), as in AttentionTrace.has


@dataclass(frozen=True)
class AnalysisInfo:
    """What the registry knows about one analysis."""

    name: str
    func: Callable[..., Any]
    result: str  # the result type's name, e.g. "HeadScores"
    needs: tuple[Payload, ...] = ("weights",)  # trace payloads the analysis reads
    square: bool = False  # needs a stream whose queries and keys are the same sequence (not "cross")
    tags: tuple[str, ...] = ()
    params: dict[str, inspect.Parameter] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """First line of the docstring."""
        return (inspect.getdoc(self.func) or "").strip().splitlines()[0] if self.func.__doc__ else ""

    def param_schema(self) -> dict[str, dict[str, Any]]:
        """JSON-friendly description of the parameters (name -> {default, annotation})."""
        out = {}
        for name, p in self.params.items():
            default = None if p.default is inspect.Parameter.empty else p.default
            if not isinstance(default, (int, float, str, bool, type(None), list, tuple)):
                default = repr(default)
            out[name] = {"default": default, "annotation": str(p.annotation), "required": p.default is inspect.Parameter.empty}
        return out


_REGISTRY: dict[str, AnalysisInfo] = {}


def register_analysis(
    name: str,
    *,
    result: str,
    needs: tuple[Payload, ...] = ("weights",),
    square: bool = False,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``func(trace, **params)`` under ``name`` (the docstring must cite its source)."""

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise InputError(f"an analysis named {name!r} is already registered ({_REGISTRY[name].func.__module__})")
        if not func.__doc__:
            raise InputError(f"analysis {name!r} needs a docstring that says what it computes and cites its source")
        sig = inspect.signature(func)
        params = {k: p for i, (k, p) in enumerate(sig.parameters.items()) if i > 0 and p.kind is not p.VAR_KEYWORD}
        _REGISTRY[name] = AnalysisInfo(name, func, result, tuple(needs), square, tuple(tags), params)
        func.analysis_name = name  # type: ignore[attr-defined]
        return func

    return deco


def list_analyses() -> list[str]:
    """Names of the registered analyses, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def analysis_info(name: str) -> AnalysisInfo:
    """The registry entry of ``name``; raises UnknownNameError listing the valid names."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise UnknownNameError("analysis", name, sorted(_REGISTRY))
    return _REGISTRY[name]


def get_analysis(name: str) -> Callable[..., Any]:
    """The function registered as ``name``; raises UnknownNameError listing the valid names."""
    return analysis_info(name).func


def explain(name: str) -> str:
    """The docstring of an analysis: what it computes, its parameters, and the paper it comes from."""
    return inspect.cleandoc(get_analysis(name).__doc__ or "")


def run_analysis(name: str, trace: Any, *args: Any, **params: Any) -> Any:
    """Run analysis ``name`` on ``trace``: the call is ``func(trace, *args, **params)``.

    Positional arguments after the trace fill the analysis's parameters in the order of its
    signature (for ``compare`` the first is ``other``, the second trace: ``run_analysis("compare",
    a, b)``); keyword arguments go by name. :func:`analysis_info` ``(name).params`` lists the
    parameters. An unknown parameter name or too many positional arguments is an
    :class:`~attnscope.errors.InputError` that lists the valid parameters.
    """
    info = analysis_info(name)
    if info.needs or trace is not None:
        from ._common import check_trace

        check_trace(f"the trace given to {name!r}", trace)
    sig = inspect.signature(info.func)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    valid = list(info.params) or ["(none)"]
    if not accepts_any:
        for p in params:
            if p not in info.params:
                raise UnknownNameError(f"parameter of analysis {name!r}", p, valid)
    try:
        sig.bind(trace, *args, **params)
    except TypeError as e:
        raise InputError(f"analysis {name!r} takes the trace, then {', '.join(valid)} ({e}); pass parameters by "
                         f"name, e.g. run_analysis({name!r}, trace, {valid[0]}=…)") from None
    return info.func(trace, *args, **params)


def _ensure_loaded() -> None:
    # Importing the package imports every method module (each registers itself).
    from .. import analysis  # noqa: F401
