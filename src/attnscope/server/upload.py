"""Traces a user uploads to the explorer (to compare two saved traces), and what two traces can be compared on.

An upload is read only as an attnscope ``.safetensors`` trace (:meth:`attnscope.AttentionTrace.load`):
the file's first bytes must be a safetensors header, it is never unpickled, and the request body is
already bounded by the server's ``max_body_bytes``. Every refusal is one line that says what to do.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

from ..errors import InputError, TraceFormatError

HOW = "upload a trace written by `attnscope analyze --save-trace`, AttentionTrace.save() or the explorer's 'trace' link"


def read_trace(data: bytes):
    """The AttentionTrace in ``data`` (the bytes of a ``.safetensors`` trace file), maps read eagerly.

    Raises :class:`TraceFormatError` (one line) for anything else: not safetensors (a pickle, a zip, text),
    a safetensors file that is not an attnscope trace, a corrupt header, or a trace without full maps.
    """
    from ..trace import AttentionTrace

    if len(data) < 10:
        raise TraceFormatError(f"the uploaded file is empty or too short to be a trace; {HOW}")
    (n,) = struct.unpack("<Q", data[:8])  # safetensors: uint64 header length, then a JSON header
    if not 2 <= n <= len(data) - 8 or data[8:9] != b"{":
        raise TraceFormatError("the uploaded file is not a .safetensors file (pickle / torch.save files are never "
                               f"read); {HOW}")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "upload.safetensors"
        path.write_bytes(data)
        try:
            trace = AttentionTrace.load(path, lazy=False)
        except TraceFormatError as e:
            msg = str(e).replace(str(path), "the uploaded file")
            raise TraceFormatError(msg if HOW in msg or "traces are written by" in msg else f"{msg}; {HOW}") from None
    if not any(trace.has("weights", s) for s in trace.streams):
        raise TraceFormatError("the uploaded trace holds no full attention maps (it was captured with mode "
                               "stats/topk); comparing needs them: save a trace captured with mode='full'")
    return trace


def comparison_problem(a, b, stream: str | None, align: str) -> str | None:
    """Why traces ``a`` and ``b`` cannot be compared head by head (one line), or None when they can.

    Head-wise differences need the same stream, the same layers and heads (the same model, or one of the
    same shape); ``align="position"`` also needs the same number of query and key tokens.
    """
    shared = [s for s in a.streams if s in b.streams and a.has("weights", s) and b.has("weights", s)]
    if not shared:
        return (f"trace A has streams {a.streams} and trace B {b.streams}: they share no stream with full maps, so "
                "there is nothing to compare head by head")
    s = stream if stream in shared else ("self" if "self" in shared else shared[0])
    if stream is not None and stream not in shared:
        return f"stream {stream!r} is not in both traces; both hold {shared}"
    la, ha, lb, hb = a.layers[s], a.heads[s], b.layers[s], b.heads[s]
    if la != lb or ha != hb:
        return (f"trace A ({a.model_id or 'unknown model'}) holds {len(la)} layers × {len(ha)} heads and trace B "
                f"({b.model_id or 'unknown model'}) {len(lb)} × {len(hb)}: head-by-head differences need the same "
                "layers and heads (the same model, or one of the same shape)")
    na = (len(a.query_tokens(s)), len(a.key_tokens(s)))
    nb = (len(b.query_tokens(s)), len(b.key_tokens(s)))
    if align == "position" and na != nb:
        return (f"trace A has {na[0]} tokens and trace B {nb[0]}: comparing by position needs equal lengths; "
                "choose 'shared tokens' to compare the tokens both inputs have")
    return None


def check_comparable(a, b, stream: str | None, align: str) -> str:
    """The stream to compare on; InputError (one line, :func:`comparison_problem`) when there is none."""
    problem = comparison_problem(a, b, stream, align)
    if problem:
        raise InputError(problem)
    shared = [s for s in a.streams if s in b.streams]
    return stream if stream in shared else ("self" if "self" in shared else shared[0])
