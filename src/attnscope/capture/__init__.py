"""How attention is obtained: the fast path (registered attention function), the eager reference, generation.

This sub-package is also callable: ``attnscope.capture(lm, text)`` is :func:`attnscope.capture.api.capture`
(the package shares its name with the top-level ``attnscope.capture`` function).
"""

import sys
import types

from .api import attention_implementation, capture, capture_batch, check_text, resolve_selection, supports_interface
from .generation import GenerationResult, generate
from .incremental import IncrementalCapture, extend, incremental
from .interface import ATTN_NAME, CaptureSession, Intervention, Site, attention_probs_block, register, session_scope
from .recorders import MODES, FullRecorder, Recorder, StatsRecorder, TopKRecorder

__all__ = [
    "capture", "capture_batch", "generate", "GenerationResult", "extend", "incremental", "IncrementalCapture",
    "check_text", "resolve_selection",
    "supports_interface", "attention_implementation",
    "ATTN_NAME", "CaptureSession", "Intervention", "Site", "attention_probs_block", "register", "session_scope",
    "MODES", "Recorder", "FullRecorder", "StatsRecorder", "TopKRecorder",
]


class _CallablePackage(types.ModuleType):
    """``attnscope.capture`` is both this package and the capture function (importing the package sets
    the attribute ``attnscope.capture`` to the package, so the package forwards calls)."""

    __wrapped__ = staticmethod(capture)  # inspect.signature(attnscope.capture) gives capture's signature

    def __call__(self, *args, **kwargs):
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
