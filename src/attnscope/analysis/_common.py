"""Helpers shared by the analyses (not registered)."""

from __future__ import annotations

import reprlib
import unicodedata

import numpy as np

from ..errors import InputError, UnknownNameError

HEAD_FUSIONS = ("mean", "max", "min")


def maps(trace, stream: str | None) -> tuple[str, np.ndarray]:
    """(resolved stream, full maps as float64 numpy (layer, head, query, key))."""
    s = trace.resolve_stream(stream)
    return s, trace.weights(s).double().numpy()


def token_labels(trace, stream: str | None, which: str = "query") -> list[str]:
    """Display labels of a stream's query or key tokens, exact from the text's character offsets where the
    trace has the text (see :meth:`attnscope.trace.Tokens.labels`). The rows of the ``cross`` stream are
    labelled with the token each decoder step predicts (:func:`cross_row_labels`)."""
    from ..trace import STREAM_SEQUENCES

    s = trace.resolve_stream(stream)
    if s == "cross" and which == "query":
        return cross_row_labels(trace)
    seq = STREAM_SEQUENCES[s][0 if which == "query" else 1]
    return trace.tokens[seq].labels(trace.texts.get(seq))


def audio_frames(trace) -> int | None:
    """The encoder frames that hold audio in a speech trace, or None for any other trace.

    Whisper pads every input to 30 s (1,500 encoder frames of 20 ms); frames after the audio's end are
    padding, so figures and alignments show only the first ``ceil(audio_seconds / frame_seconds)``."""
    frame_s, audio_s = trace.meta.get("frame_seconds"), trace.meta.get("audio_seconds")
    if not frame_s or not audio_s or "source" not in trace.tokens:
        return None
    return max(1, min(len(trace.tokens["source"]), int(np.ceil(audio_s / frame_s))))


CROSS_ROW_TITLE = "target (token predicted at each decoder step)"
NEXT_LABEL = "<next>"  # a last decoder row whose prediction the trace does not hold


def cross_row_labels(trace) -> list[str]:
    """Labels of the cross-attention rows: the token each decoder step *predicts*.

    With teacher forcing, decoder row i reads input token i (the target shifted right: row 0 reads the
    decoder start token) and produces token i + 1; its cross-attention is the source context used to
    produce that token. Rows are labelled with the produced token, as in the alignment figures of
    Bahdanau et al. 2015 (ICLR, Fig. 3; row j = the j-th generated word) and for word timestamps from
    Whisper's cross-attention, which time the predicted tokens. Hugging Face captures (``model_kind``
    seq2seq / speech-seq2seq) hold the decoder *inputs* as ``tokens["target"]``: rows are labelled with
    ``meta["target_labels"]`` (the teacher-forced labels) when present, else with input token i + 1
    (``<next>`` for a last row whose prediction was not recorded). Traces whose target tokens are the
    produced tokens themselves (the GRU seq2seq models) keep them.
    """
    tgt = trace.tokens["target"].labels(trace.texts.get("target"))
    labels = trace.meta.get("target_labels")
    if labels is not None and len(labels) == len(tgt):
        return [str(x) for x in labels]
    if trace.meta.get("model_kind") in ("seq2seq", "speech-seq2seq"):
        return tgt[1:] + [NEXT_LABEL]
    return tgt


def require_square(trace, stream: str | None, what: str) -> str:
    s = trace.resolve_stream(stream)
    if s == "cross":
        square = [x for x in trace.streams if x != "cross"]
        raise InputError(f"{what} needs a self-attention stream (queries and keys from one sequence), not 'cross'; "
                         f"pass stream= one of: {', '.join(square)}")
    return s


def fuse_heads(w: np.ndarray, fusion: str) -> np.ndarray:
    """Fuse heads: (layer, head, q, k) -> (layer, q, k) by mean, max or min (Abnar & Zuidema 2020, §3)."""
    if fusion not in HEAD_FUSIONS:
        raise UnknownNameError("head fusion", fusion, HEAD_FUSIONS)
    return {"mean": w.mean(1), "max": w.max(1), "min": w.min(1)}[fusion]  # (L, Nq, Nk)


def query_offset(trace, stream: str) -> int:
    return int(trace.meta.get("query_offsets", {}).get(stream, 0))


def allowed(trace, stream: str, nq: int, nk: int) -> np.ndarray:
    m = trace.allowed_mask(stream)
    return np.ones((nq, nk), bool) if m is None else m.numpy()


def relative_distance(nq: int, nk: int, q_offset: int = 0) -> np.ndarray:
    """(query, key) matrix of key_position - query_position (negative = earlier key)."""
    return np.arange(nk)[None, :] - (np.arange(nq)[:, None] + q_offset)


def is_delimiter(text: str, special: bool) -> bool:
    """Punctuation-only tokens and tokenizer separators ([SEP], </s>, <|endoftext|>…) count as delimiters."""
    t = text.strip().removeprefix("##").removeprefix("Ġ").removeprefix("▁").strip()
    if special:
        return True
    if not t:
        return False
    return all(unicodedata.category(c).startswith("P") for c in t)


# ---------------------------------------------------------------------------- parameter checks
# Analyses are called from Python, the CLI and the REST API with user values: a wrong type or an
# out-of-range number is an InputError that names the parameter and what to pass.
def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int within [lo, hi] (bools and floats are refused)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
            (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f" in [{lo}, {hi}]" if lo is not None and hi is not None else f" >= {lo}" if lo is not None else ""
        raise InputError(f"{name} must be an integer{rng}, got {reprlib.repr(value)}")
    return int(value)


def check_number(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float within [lo, hi]."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
            (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f" in [{lo}, {hi}]" if lo is not None and hi is not None else f" >= {lo}" if lo is not None else ""
        raise InputError(f"{name} must be a number{rng}, got {reprlib.repr(value)}")
    return float(value)


def check_trace(name: str, value):
    """``value`` if it is an AttentionTrace (load a file with ``AttentionTrace.load(path)``)."""
    from ..trace import AttentionTrace

    if not isinstance(value, AttentionTrace):
        raise InputError(f"{name} must be an AttentionTrace (capture one, or AttentionTrace.load(path)), "
                         f"got {type(value).__name__}")
    return value


def check_positions(name: str, value, n: int) -> list[int]:
    """Token positions (one int or a list of ints) within a sequence of ``n`` tokens; negative counts from the end."""
    import numbers

    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, range, np.ndarray)) or len(value) == 0:
        raise InputError(f"{name} must be token positions: a non-empty list of ints (e.g. [0] for the first token), "
                         f"got {reprlib.repr(value)}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not -n <= v < n:
            raise InputError(f"{name}: position {reprlib.repr(v)} is outside the sequence of {n} tokens (0..{n - 1})")
        out.append(int(v) % n)
    return out
