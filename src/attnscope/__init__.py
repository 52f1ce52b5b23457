"""attnscope: capture, analyse and visualise attention in Transformer and seq2seq models."""

from .errors import AttnscopeError, InputError, TraceFormatError, UnknownNameError
from .trace import AttentionTrace, Tokens

__version__ = "0.1.0"

__all__ = ["AttentionTrace", "Tokens", "AttnscopeError", "InputError", "TraceFormatError", "UnknownNameError"]
