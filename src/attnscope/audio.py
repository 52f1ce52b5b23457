"""Reading speech input: a WAV file as mono float32 samples at the model's rate, bounded in length.

The standard library's ``wave`` reads PCM WAV (8, 16, 24 or 32-bit integer samples); channels are
averaged to mono and the signal is resampled with a polyphase filter (``scipy.signal.resample_poly``).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .errors import InputError

MAX_AUDIO_SECONDS = 30.0
"""Whisper reads one 30-second window; longer input is refused (or cut, with ``truncate``)."""


def _samples(raw: bytes, width: int) -> np.ndarray:
    """PCM bytes -> float32 in [-1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:  # 24-bit little-endian: widen each sample to 32 bits
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        x = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16))
        x = np.where(x >= 1 << 23, x - (1 << 24), x)
        return x.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    raise InputError(f"{8 * width}-bit WAV samples are not supported; use 16-bit PCM")


def resample(x: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """``x`` sampled at ``rate`` Hz, resampled to ``target_rate`` Hz (polyphase filter)."""
    if rate == target_rate:
        return x.astype(np.float32, copy=False)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(target_rate, rate)
    return resample_poly(x, target_rate // g, rate // g).astype(np.float32)


def read_wav(path: str | Path, rate: int | None = None, *, max_seconds: float | None = MAX_AUDIO_SECONDS,
             truncate: bool = False) -> tuple[np.ndarray, int]:
    """``(samples, rate)``: the WAV file at ``path`` as mono float32, resampled to ``rate`` when given.

    Audio longer than ``max_seconds`` is refused, or cut to that length with ``truncate``; only the
    frames kept are read.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--audio {path}: no such file")
    try:
        with wave.open(str(path), "rb") as f:
            sr, n, width, ch = f.getframerate(), f.getnframes(), f.getsampwidth(), f.getnchannels()
            if f.getcomptype() != "NONE":
                raise InputError(f"{path}: compressed WAV ({f.getcompname()}) is not supported; use PCM")
            if sr <= 0 or ch <= 0:
                raise InputError(f"{path}: invalid WAV header ({sr} Hz, {ch} channels)")
            if max_seconds is not None and n > max_seconds * sr:
                if not truncate:
                    raise InputError(f"{path} is {n / sr:.1f} s long; the model reads at most {max_seconds:g} s "
                                     "(cut it, or pass --truncate to keep the first part)")
                n = int(max_seconds * sr)
            raw = f.readframes(n)
    except (wave.Error, EOFError) as e:
        raise InputError(f"{path} is not a readable WAV file ({e}); convert it to 16-bit PCM WAV") from None
    x = _samples(raw[: len(raw) - len(raw) % (width * ch)], width)
    if ch > 1:
        x = x.reshape(-1, ch).mean(1)  # (frames, channels) -> mono
    if x.size == 0:
        raise InputError(f"{path} holds no audio samples")
    if rate is not None:
        x, sr = resample(x, sr, rate), rate
    return x, sr
