"""Word-level timestamps for Whisper from its cross-attention (dynamic time warping over alignment heads).

The method is Whisper's own (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision"; ``whisper/timing.py``): teacher-force the transcript, take the cross-attention of the
*alignment heads* (``generation_config.alignment_heads``; heads whose attention tracks the audio), keep
the frames that hold audio (50 encoder positions per second), standardise each frame over the tokens,
median-filter along time (width 7), average the heads, and find the monotonic path through
``-matrix`` by dynamic time warping (Sakoe & Chiba 1978). A token starts where the path first reaches
its row; a word spans from its first token's start to the next word's start.

:func:`synthesize_words` builds test speech with Debian's ``espeak-ng``: words separated by known
silences, their boundaries measured from the audio energy, so timestamps can be checked against truth.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, ModelLoadError
from ..models import LoadedModel
from .alignment import Alignment

SAMPLE_RATE = 16000


@dataclass
class WordTiming:
    word: str
    start: float
    end: float
    tokens: list[int] = field(default_factory=list)


@dataclass
class WordTimestamps:
    text: str
    words: list[WordTiming]
    alignment: Alignment  # (token rows incl. <|endoftext|>, frames) matrix and the DTW path
    heads: list[tuple[int, int]]
    trace: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "heads": [list(h) for h in self.heads],
                "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words]}


def alignment_heads(lm: LoadedModel) -> list[tuple[int, int]]:
    """The model's alignment heads (``generation_config.alignment_heads``), else every head of the upper half
    of the decoder layers (Whisper's own fallback)."""
    gc = getattr(lm.model, "generation_config", None)
    heads = getattr(gc, "alignment_heads", None) if gc is not None else None
    if heads:
        return [(int(l), int(h)) for l, h in heads]
    n_layers, n_heads = lm.geometry()["cross"]
    return [(l, h) for l in range(n_layers // 2, n_layers) for h in range(n_heads)]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic minimum-cost path through ``cost`` (rows, cols) from (0, 0) to (rows-1, cols-1);
    steps (1,1), (1,0), (0,1) (Sakoe & Chiba 1978). Returns (row indices, col indices) along the path."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for j in range(1, m + 1):  # column sweep, vectorised over nothing: sizes are tokens x frames (small)
        for i in range(1, n + 1):
            c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if c0 <= c1 and c0 <= c2:
                best, t = c0, 0
            elif c1 <= c2:
                best, t = c1, 1
            else:
                best, t = c2, 2
            acc[i, j] = cost[i - 1, j - 1] + best
            trace[i, j] = t
    i, j = n, m
    rows, cols = [], []
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    if i != 0 or j != 0:  # reached an edge early: walk along it
        while i > 0:
            i -= 1
            rows.append(i)
            cols.append(0)
        while j > 0:
            j -= 1
            rows.append(0)
            cols.append(j)
    return np.array(rows[::-1]), np.array(cols[::-1])


def _median_filter(x: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import median_filter

    if width <= 1:
        return x
    return median_filter(x, size=(1,) * (x.ndim - 1) + (width,), mode="reflect")


def _split_words(tokenizer, ids: list[int]) -> list[list[int]]:
    """Group token indices into words: a token starting with a space begins a word; a punctuation-only token
    joins the previous word (Whisper's English rule, ``split_tokens_on_spaces``)."""
    words: list[list[int]] = []
    for i, t in enumerate(ids):
        s = tokenizer.decode([t])
        punct = bool(s.strip()) and all(not c.isalnum() for c in s.strip())
        if not words or (s.startswith(" ") and not punct):
            words.append([i])
        else:
            words[-1].append(i)
    return words


def transcribe(lm: LoadedModel, audio: np.ndarray, sampling_rate: int = SAMPLE_RATE, max_new_tokens: int = 96
               ) -> tuple[str, list[int]]:
    """Greedy transcript (text, token ids without special tokens)."""
    import torch

    feats = lm.processor.feature_extractor(np.asarray(audio, np.float32), sampling_rate=sampling_rate,
                                           return_tensors="pt")
    from ..models import quiet_transformers

    with torch.no_grad(), quiet_transformers():  # its notes on generation settings are not the user's concern
        out = lm.model.generate(feats["input_features"], max_new_tokens=max_new_tokens, do_sample=False)
    eot = lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = [int(t) for t in out[0].tolist() if t < eot]
    return lm.tokenizer.decode(ids), ids


def word_timestamps(lm: LoadedModel | str, audio, sampling_rate: int = SAMPLE_RATE, *, text: str | None = None,
                    heads: Sequence[tuple[int, int]] | None = None, medfilt_width: int = 7,
                    method: str = "fast") -> WordTimestamps:
    """Word timestamps of ``audio`` (1-D float array) from Whisper's cross-attention; transcribes first when
    ``text`` is not given. ``heads`` overrides the alignment heads (``(layer, head)`` pairs)."""
    import torch

    from ..capture import capture
    from ..models import load_model

    if isinstance(lm, str):
        lm = load_model(lm)
    if lm.kind != "speech-seq2seq" or lm.processor is None:
        raise InputError(f"{lm.name} is not a Whisper-style speech model; word timestamps need one "
                         "(e.g. load_model('whisper-tiny-en'))")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError("audio must be a non-empty 1-D array of samples")
    if sampling_rate != SAMPLE_RATE:
        raise InputError(f"Whisper takes {SAMPLE_RATE} Hz audio, got {sampling_rate} Hz; resample it first")
    if audio.size > 30 * SAMPLE_RATE:
        raise InputError(f"audio is {audio.size / SAMPLE_RATE:.1f} s; Whisper reads one 30 s window — split it")
    if text is None:
        text, _ = transcribe(lm, audio, sampling_rate)
    if not text.strip():
        raise InputError("the transcript is empty (silence?); nothing to time")
    heads = [tuple(map(int, h)) for h in (heads or alignment_heads(lm))]
    n_layers, n_heads = lm.geometry()["cross"]
    for l, h in heads:
        if not (0 <= l < n_layers and 0 <= h < n_heads):
            raise InputError(f"alignment head ({l}, {h}) is outside the model's {n_layers} layers x {n_heads} heads")
    layers = sorted({l for l, _ in heads})
    trace = capture(lm, audio=audio, sampling_rate=sampling_rate, target=text, mode="full", streams=["cross"],
                    layers=layers, method=method, full_dtype=torch.float32)
    text_ids = trace.tokens["target"].ids[2:]  # after <|startoftranscript|><|notimestamps|>
    frame_s = float(trace.meta["frame_seconds"])
    n_frames = int(np.ceil(trace.meta["audio_seconds"] / frame_s))
    w = trace.weights("cross").double().numpy()  # (L, H, T, S)
    held = trace.layers["cross"]
    sel = np.stack([w[held.index(l), h] for l, h in heads])[:, 1:, :n_frames]  # (K, n_text + 1, F)
    mean = sel.mean(axis=-2, keepdims=True)
    std = sel.std(axis=-2, keepdims=True)
    sel = (sel - mean) / np.where(std > 0, std, 1.0)  # standardise each frame over tokens
    sel = _median_filter(sel, medfilt_width)
    matrix = sel.mean(0)  # (n_text + 1, F): row k predicts text token k; the last row predicts <|endoftext|>
    rows, cols = dtw(-matrix)
    jumps = np.r_[True, np.diff(rows) > 0]
    starts = cols[jumps] * frame_s  # (n_text + 1,): when the path first reaches each row
    words = []
    for grp in _split_words(lm.tokenizer, text_ids):
        a, b = grp[0], grp[-1] + 1
        words.append(WordTiming(lm.tokenizer.decode([text_ids[i] for i in grp]).strip(), float(starts[a]),
                                float(starts[b]), [text_ids[i] for i in grp]))
    labels = [lm.tokenizer.decode([t]) for t in text_ids] + ["<|endoftext|>"]
    al = Alignment(matrix, labels, [f"{j * frame_s:.2f}s" for j in range(n_frames)], list(range(1, len(labels) + 1)),
                   list(range(n_frames)), layers, heads, frame_seconds=frame_s, path=(rows, cols),
                   meta={"standardised": True, "medfilt_width": medfilt_width})
    return WordTimestamps(text=text, words=words, alignment=al, heads=heads, trace=trace)


# ---------------------------------------------------------------------------- synthetic speech + evaluation
def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A WAV file as mono float32 at its own rate (any length: espeak-ng's words, or a user's file that
    :func:`attnscope.audio.read_wav` bounds before it gets here)."""
    from ..audio import read_wav

    return read_wav(path, max_seconds=None)


def _active_span(x: np.ndarray, sr: int, rel_threshold: float = 0.05, win_s: float = 0.01) -> tuple[int, int]:
    """[start, stop) samples of the part of ``x`` whose 10 ms RMS exceeds ``rel_threshold`` of its peak RMS."""
    win = max(1, int(win_s * sr))
    n = x.size // win
    if n == 0:
        return 0, x.size
    rms = np.sqrt((x[: n * win].reshape(n, win) ** 2).mean(1))
    on = np.flatnonzero(rms > rel_threshold * rms.max())
    if on.size == 0:
        return 0, 0
    return int(on[0] * win), int(min(x.size, (on[-1] + 1) * win))


def synthesize_words(words: Sequence[str], gaps: float | Sequence[float] = 0.3, *, voice: str = "en-us",
                     speed: int = 150, lead: float = 0.5, tail: float = 0.5
                     ) -> tuple[np.ndarray, int, list[tuple[str, float, float]]]:
    """Speech for ``words`` with espeak-ng, each word synthesised alone, trimmed to its voiced part, and joined
    with ``gaps`` seconds of silence. Returns (16 kHz audio, 16000, [(word, start s, end s)]) where the
    boundaries are those of the energy-trimmed words, i.e. known exactly."""
    from scipy.signal import resample_poly

    if not espeak_available():
        raise ModelLoadError("espeak-ng is not installed: `apt-get install -y espeak-ng`")
    words = [w for w in words if w.strip()]
    if not words:
        raise InputError("no words to synthesise")
    gaps = [float(gaps)] * (len(words) - 1) if isinstance(gaps, (int, float)) else [float(g) for g in gaps]
    if len(gaps) != len(words) - 1:
        raise InputError(f"{len(words)} words need {len(words) - 1} gaps, got {len(gaps)}")
    pieces: list[np.ndarray] = [np.zeros(int(lead * SAMPLE_RATE), np.float32)]
    ref = []
    pos = pieces[0].size
    with tempfile.TemporaryDirectory() as d:
        for k, w in enumerate(words):
            path = Path(d) / f"w{k}.wav"
            # "--" ends the options: a word like "-x" or "--help" is text to say, not an option
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), "--", w], check=True,
                           capture_output=True, timeout=60)
            x, sr = _read_wav(path)
            if sr != SAMPLE_RATE:
                from math import gcd

                g = gcd(SAMPLE_RATE, sr)
                x = resample_poly(x, SAMPLE_RATE // g, sr // g).astype(np.float32)
            a, b = _active_span(x, SAMPLE_RATE)
            x = x[a:b]
            ref.append((w, pos / SAMPLE_RATE, (pos + x.size) / SAMPLE_RATE))
            pieces.append(x)
            pos += x.size
            if k < len(gaps):
                pieces.append(np.zeros(int(gaps[k] * SAMPLE_RATE), np.float32))
                pos += pieces[-1].size
    pieces.append(np.zeros(int(tail * SAMPLE_RATE), np.float32))
    audio = np.concatenate(pieces)
    audio = 0.5 * audio / max(1e-6, float(np.abs(audio).max()))
    return audio, SAMPLE_RATE, ref


def _norm(w: str) -> str:
    return re.sub(r"[^a-z0-9']", "", w.lower())


def compare_boundaries(words: Sequence[WordTiming], reference: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
    """Errors of predicted word timings against known ones, over words matched by spelling (difflib).

    ``start_mae`` / ``end_mae``: mean |predicted − true| start / end (s). Whisper's end of a word is the
    start of the next one, so it includes the pause; ``boundary_mae`` therefore measures each predicted
    boundary between consecutive matched words by its distance to the true silent gap (0 inside it).
    """
    pred = [_norm(w.word) for w in words]
    true = [_norm(r[0]) for r in reference]
    sm = difflib.SequenceMatcher(a=pred, b=true, autojunk=False)
    pairs = [(i + k, j + k) for i, j, n in sm.get_matching_blocks() for k in range(n)]
    if not pairs:
        return {"matched": 0, "of": len(reference), "start_mae": float("nan"), "end_mae": float("nan"),
                "boundary_mae": float("nan"), "pairs": []}
    se = [abs(words[i].start - reference[j][1]) for i, j in pairs]
    ee = [abs(words[i].end - reference[j][2]) for i, j in pairs]
    be = []
    for (i, j), (i2, j2) in zip(pairs, pairs[1:]):
        if i2 == i + 1 and j2 == j + 1:
            b = words[i2].start
            lo, hi = reference[j][2], reference[j2][1]
            be.append(0.0 if lo <= b <= hi else min(abs(b - lo), abs(b - hi)))
    return {"matched": len(pairs), "of": len(reference), "start_mae": float(np.mean(se)), "end_mae": float(np.mean(ee)),
            "boundary_mae": float(np.mean(be)) if be else float("nan"),
            "pairs": [(words[i].word, reference[j][0], round(words[i].start - reference[j][1], 3)) for i, j in pairs]}


def find_alignment_heads(lm: LoadedModel, audio, reference: Sequence[tuple[str, float, float]],
                         sampling_rate: int = SAMPLE_RATE, text: str | None = None):
    """Score every cross-attention head against known word timings: for each text token row, the reference
    links are the frames of its word. Returns (HeadScores, trace); rank with alignment.best_heads."""
    import torch

    from ..capture import capture
    from .alignment import score_heads

    text = text or " " + " ".join(r[0] for r in reference)
    trace = capture(lm, audio=np.asarray(audio, np.float32), sampling_rate=sampling_rate, target=text, mode="full",
                    streams=["cross"], full_dtype=torch.float32)
    ids = trace.tokens["target"].ids[2:]
    groups = _split_words(lm.tokenizer, ids)
    if len(groups) != len(reference):
        raise InputError(f"the text splits into {len(groups)} words but the reference has {len(reference)}")
    frame_s = float(trace.meta["frame_seconds"])
    n_frames = int(np.ceil(trace.meta["audio_seconds"] / frame_s))
    # kept rows: decoder rows predicting text tokens are rows 1..len(ids) (row 0 predicts <|notimestamps|>)
    ref = np.zeros((len(ids), n_frames), dtype=bool)
    for grp, (_, s, e) in zip(groups, reference):
        for i in grp:
            ref[i, int(s / frame_s): max(int(s / frame_s) + 1, int(np.ceil(e / frame_s)))] = True
    sub = trace.sel(stream="cross")
    t_text = trace.tokens["target"]
    from ..trace import AttentionTrace, Tokens

    w = sub.weights("cross")[:, :, 1: 1 + len(ids)]  # (L, H, n_text, S)
    rows = Tokens(text=t_text.text[1: 1 + len(ids)], ids=t_text.ids[1: 1 + len(ids)])
    view = AttentionTrace(tokens={"source": trace.tokens["source"], "target": rows},
                          layers={"cross": sub.layers["cross"]}, heads={"cross": sub.heads["cross"]},
                          weights={"cross": w}, model_id=trace.model_id,
                          meta={"frame_seconds": frame_s, "audio_seconds": trace.meta["audio_seconds"],
                                "target_labels": [lm.tokenizer.decode([t]) for t in ids]})
    return score_heads(view, reference=ref, drop_special=False), view
