"""Error types. Every message says what was wrong and what to do instead."""

from __future__ import annotations


class AttnscopeError(Exception):
    """Base class for errors attnscope raises on bad input (the CLI prints them without a traceback)."""


class InputError(AttnscopeError, ValueError):
    """User input (text, layer/head selection, parameters) is invalid."""


class UnknownNameError(InputError, KeyError):
    """A name (model, analysis, stream, recorder…) is not one of the valid ones; the message lists them."""

    def __init__(self, kind: str, name: object, valid: list[str] | tuple[str, ...]):
        self.kind, self.name, self.valid = kind, name, list(valid)
        plural = kind[:-2] + "es" if kind.endswith("is") else kind + "s"  # analysis -> analyses
        super().__init__(f"unknown {kind} {name!r}; valid {plural}: {', '.join(map(str, valid))}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0]


class TraceFormatError(AttnscopeError, ValueError):
    """A file is not a readable attnscope trace (foreign, corrupt, or of an unknown schema version)."""


class ModelLoadError(AttnscopeError, RuntimeError):
    """A model could not be loaded or converted."""


class CaptureError(AttnscopeError, RuntimeError):
    """Attention could not be captured from a model."""
