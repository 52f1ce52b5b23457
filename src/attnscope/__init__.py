"""attnscope: capture, analyse and visualise attention in Transformer and seq2seq models."""

from .errors import AttnscopeError, InputError, TraceFormatError, UnknownNameError
from .trace import AttentionTrace, Tokens


def show(trace, path="attnscope_trace.html", **limits):
    """Write ``trace`` as a standalone, offline explorer page (see :func:`attnscope.render.notebook.show`)."""
    from .render.notebook import show as _show

    return _show(trace, path, **limits)


__version__ = "0.1.0"

__all__ = ["AttentionTrace", "Tokens", "AttnscopeError", "InputError", "TraceFormatError", "UnknownNameError", "show"]
