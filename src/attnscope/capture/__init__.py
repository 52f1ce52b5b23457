"""How attention is obtained: the fast path (registered attention function), the eager reference, generation."""

from .api import attention_implementation, capture, capture_batch, check_text, resolve_selection, supports_interface
from .interface import ATTN_NAME, CaptureSession, Intervention, Site, attention_probs_block, register, session_scope
from .recorders import MODES, FullRecorder, Recorder, StatsRecorder, TopKRecorder

__all__ = [
    "capture", "capture_batch", "check_text", "resolve_selection", "supports_interface", "attention_implementation",
    "ATTN_NAME", "CaptureSession", "Intervention", "Site", "attention_probs_block", "register", "session_scope",
    "MODES", "Recorder", "FullRecorder", "StatsRecorder", "TopKRecorder",
]
