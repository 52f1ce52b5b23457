"""REST attribution endpoints (/v1/explain, /ablate, /probe, /counterfactual, /dropout): every answer is
compared with a direct call of the attnscope.attribution function it wraps, plus limits and validation."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from attnscope.attribution import (  # noqa: E402
    ALL_METHODS, BIAS_NOTE, Knockout, ScaleHeads, ZeroHeads, bias_probe, compare_counterfactuals, dropout_consistency,
    explain, head_importance, intervene, token_interventions,
)
from attnscope.attribution.testing import tiny_model  # noqa: E402
from attnscope.server import ServerConfig, create_app  # noqa: E402
from attnscope.server.schemas import ExplainMethod  # noqa: E402
from _server_helpers import err  # noqa: E402

pytestmark = pytest.mark.slow

TEXT = "The acting was wooden, but the soundtrack was wonderful."


@pytest.fixture(scope="module")
def clf():
    return tiny_model("bert")  # random-init BERT classifier, 2 layers x 4 heads, 3 labels


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", task="lm")  # random-init Llama (GQA) with an LM head


@pytest.fixture(scope="module")
def app_client(minilm, clf, lm, tiny):
    cfg = ServerConfig(torch_threads=1, models={"minilm": minilm, "clf": clf, "lm": lm, "tiny-marian": tiny("marian")},
                       max_text_chars=300, max_json_elements=50_000, timeout_s=120, max_attribution_tokens=40,
                       max_runs=5, max_samples=64, max_attribution_texts=3, max_probe_sentences=12)
    app = create_app(cfg)
    with TestClient(app, base_url="http://localhost") as c:
        yield app, c


@pytest.fixture(scope="module")
def client(app_client):
    return app_client[1]


@pytest.fixture(scope="module")
def openapi(client):
    return client.get("/openapi.json").json()


def validate(openapi, name, body):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"$ref": f"#/components/schemas/{name}", "components": openapi["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def close(a, b, tol=1e-5):
    """The server runs the model on its worker thread, where torch may split reductions differently: float32
    noise (~1e-7) is expected, anything bigger is a real difference."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True), (a, b)


def test_openapi_documents_attribution(openapi):
    for p in ("/v1/explain", "/v1/ablate", "/v1/probe", "/v1/counterfactual", "/v1/dropout"):
        assert p in openapi["paths"], p
        responses = openapi["paths"][p]["post"]["responses"]
        assert {"404", "413", "422", "429", "504"} <= set(responses), p
    assert get_args(ExplainMethod) == ALL_METHODS  # the API's method names are the library's


# ---------------------------------------------------------------------------- /v1/explain
def test_explain_matches_python_api(client, clf, openapi):
    body = {"text": TEXT, "model": "clf", "ig_steps": 8, "n_samples": 16, "top_k": 2, "seed": 3}
    r = client.post("/v1/explain", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    validate(openapi, "ExplainOut", got)
    ref = explain(clf, TEXT, ig_steps=8, n_samples=16, k=2, seed=3)
    assert got["tokens"] == ref.tokens and got["special"] == ref.special and got["target"] == ref.target
    assert set(got["scores"]) == set(ALL_METHODS) - {"alti_logit"}  # the default: every method defined for a classifier
    for m, v in ref.scores.items():
        close(got["scores"][m], v)
    assert got["probability"] == pytest.approx(ref.probability, rel=1e-5, abs=1e-7)
    assert len(got["agreement"]) == len(ref.agreement) == 2 * len(ref.scores) - 3  # attention and rollout vs every other
    for g, e in zip(got["agreement"], ref.agreement):
        assert (g["a"], g["b"], g["k"], g["n"]) == (e["a"], e["b"], 2, e["n"])
        close([g["spearman"] if g["spearman"] is not None else np.nan, g["topk_overlap"]],
              [e["spearman"], e["topk_overlap"]])
    assert {"attention", "rollout"} == {g["a"] for g in got["agreement"]}
    assert got["meta"]["ig_delta"] == pytest.approx(ref.meta["ig_delta"], abs=1e-5)  # itself float32 noise


def test_explain_class_target_and_faithfulness(client, clf):
    r = client.post("/v1/explain", json={"text": "A fine film.", "model": "clf", "target_class": "LABEL_2",
                                         "methods": ["attn_x_grad", "chefer", "occlusion"], "faithfulness": True})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["target"] == 2 and got["target_label"] == "LABEL_2"
    ref = explain(clf, "A fine film.", ["attn_x_grad", "chefer", "occlusion"], target=2)
    # neither attention nor rollout asked for: every pair is compared
    assert [(g["a"], g["b"]) for g in got["agreement"]] == [(e["a"], e["b"]) for e in ref.agreement] and \
        len(ref.agreement) == 3
    for m in ref.scores:
        close(got["scores"][m], ref.scores[m])
    assert set(got["faithfulness"]["aopc"]["deletion"]) >= {"attn_x_grad", "chefer", "occlusion"}
    e = err(client.post("/v1/explain", json={"text": "A", "model": "clf", "target_class": "positive"}), 422)
    assert "LABEL_0" in e["message"]
    assert "0..2" in err(client.post("/v1/explain", json={"text": "A", "model": "clf", "target_class": 3}), 422)["message"]
    e = err(client.post("/v1/explain", json={"text": "A", "model": "clf", "target_token": "good"}), 422)
    assert "target_class" in e["message"]
    err(client.post("/v1/explain", json={"text": "A", "model": "clf", "position": 1}), 422)


def test_explain_language_model_target_token(client, lm):
    methods = ["attention", "rollout", "attn_x_grad", "chefer", "integrated_gradients"]
    r = client.post("/v1/explain", json={"text": "The movie was", "model": "lm", "target_token": "good",
                                         "methods": methods, "ig_steps": 8})
    assert r.status_code == 200, r.text
    got = r.json()
    tid = lm.tokenizer("good", add_special_tokens=False)["input_ids"][0]
    assert got["target"] == tid and got["target_label"] == "good" and got["meta"]["causal"]
    ref = explain(lm, "The movie was", methods, target=tid, ig_steps=8)
    for m in methods:
        close(got["scores"][m], ref.scores[m])
    e = err(client.post("/v1/explain", json={"text": "x y", "model": "lm", "target_token": "unbelievably"}), 422)
    assert "tokens" in e["message"] and "one token" in e["message"]  # several sub-tokens: no silent first-piece
    assert "'un', 'bel'" in e["message"] and "##" not in e["message"]  # the pieces as text, no vocabulary markers
    e = err(client.post("/v1/explain", json={"text": "x y", "model": "lm", "target_class": 1}), 422)
    assert "target_token" in e["message"]
    err(client.post("/v1/explain", json={"text": "x y", "model": "lm", "target_token": 10**9}), 422)


def test_explain_validation_and_limits(client):
    e = err(client.post("/v1/explain", json={"text": "a b", "model": "clf", "methods": ["saliency"]}), 422,
            "ValidationError")
    assert "attn_x_grad" in e["message"] and "integrated_gradients" in e["message"]  # lists the valid methods
    err(client.post("/v1/explain", json={"text": "a b", "model": "clf", "methods": []}), 422, "ValidationError")
    err(client.post("/v1/explain", json={"text": "a b", "model": "clf", "bogus": 1}), 422, "ValidationError")
    e = err(client.post("/v1/explain", json={"text": "a b", "model": "minilm"}), 422, "NoPredictionHead")
    assert "smollm2" in e["message"]
    e = err(client.post("/v1/explain", json={"text": "a b", "model": "tiny-marian"}), 422, "UnsupportedModel")
    assert "encoder-decoder" in e["message"]
    e = err(client.post("/v1/explain", json={"text": "a b", "model": "bert-base-uncased"}), 404, "UnknownModel")
    assert "never downloads" in e["message"]
    assert "64" in err(client.post("/v1/explain", json={"text": "a b", "model": "clf", "ig_steps": 65}), 413,
                       "TooManySamples")["message"]
    # n_samples only counts when a sampling method is asked for
    assert client.post("/v1/explain", json={"text": "a b", "model": "clf", "n_samples": 1000,
                                            "methods": ["attention"]}).status_code == 200
    err(client.post("/v1/explain", json={"text": "x" * 301, "model": "clf"}), 413, "TextTooLong")
    e = err(client.post("/v1/explain", json={"text": "word " * 60, "model": "clf"}), 413, "TooManyTokens")
    assert "62 tokens" in e["message"] and "40" in e["message"]


# ---------------------------------------------------------------------------- /v1/ablate
def test_ablate_interventions_match_python_api(client, clf, openapi):
    texts = ["The movie was good.", "A dull, slow film."]
    body = {"texts": texts, "model": "clf", "target_class": 1,
            "interventions": [{"type": "zero", "heads": [[0, 1], [-1, 2]]}, {"type": "knockout", "keys": [1, -2]}]}
    r = client.post("/v1/ablate", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    validate(openapi, "AblateOut", got)
    assert got["importance"] is None and len(got["results"]) == 2
    for item, text in zip(got["results"], texts):
        ref = intervene(clf, text, [ZeroHeads([(0, 1), (1, 2)]), Knockout(keys=(1, -2))], target=1)
        for k in ("kl", "prob_shift", "logit_diff", "base_prob", "new_prob"):
            assert item[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), k
        assert item["target"] == 1 and item["target_label"] == "LABEL_1" and item["tokens"] == ref["tokens"]
        assert item["kl"] > 0
    # a no-op (scale 1.0) never leaves SDPA: the logits are bitwise equal
    r = client.post("/v1/ablate", json={"texts": texts[:1], "model": "clf",
                                        "interventions": [{"type": "scale", "heads": [[0, 0]], "factor": 1.0}]})
    item = r.json()["results"][0]
    assert item["kl"] == 0.0 and item["logit_diff"] == 0.0 and not item["flipped"]
    ref = intervene(clf, texts[0], [ScaleHeads(heads=[(0, 0)], factor=0.5)])
    r = client.post("/v1/ablate", json={"texts": texts[:1], "model": "clf",
                                        "interventions": [{"type": "scale", "heads": [[0, 0]], "factor": 0.5}]})
    assert r.json()["results"][0]["kl"] == pytest.approx(ref["kl"], rel=1e-5, abs=1e-7)


def test_ablate_head_importance_matches_python_api(client, clf):
    texts = ["The movie was good.", "A dull, slow film.", "Fine."]
    for method, metric in (("ablation", "kl"), ("gradient", "gradient")):
        r = client.post("/v1/ablate", json={"texts": texts, "model": "clf", "importance": method, "labels": [0, 1, 2]})
        assert r.status_code == 200, r.text
        got = r.json()["importance"]
        ref = head_importance(clf, texts, method=method, labels=[0, 1, 2])
        assert got["method"] == method and got["layers"] == [0, 1] and got["heads"] == [0, 1, 2, 3]
        assert set(got["scores"]) == set(ref.scores)
        close(got["scores"][metric], ref.scores[metric])
        assert np.asarray(got["scores"][metric]).shape == (2, 4)


def test_ablate_validation(client):
    def post(**kw):
        return client.post("/v1/ablate", json={"texts": ["a good film"], "model": "clf", **kw})

    assert "0..3" in err(post(interventions=[{"type": "zero", "heads": [[0, 4]]}]), 422, "InputError")["message"]
    assert "0..1" in err(post(interventions=[{"type": "mean", "heads": [[2, 0]]}]), 422, "InputError")["message"]
    e = err(post(interventions=[{"type": "knockout", "keys": [5]}]), 422, "InputError")
    assert "5 tokens" in e["message"]  # [CLS] a good film [SEP]
    err(post(interventions=[{"type": "knockout", "edges": [[0, 9]]}]), 422, "InputError")
    err(post(interventions=[{"type": "knockout"}]), 422, "InputError")
    err(post(interventions=[{"type": "explode", "heads": [[0, 0]]}]), 422, "ValidationError")
    err(post(), 422, "InputError")
    err(post(interventions=[]), 422, "InputError")
    assert "importance" in err(post(interventions=[{"type": "zero", "heads": [[0, 0]]}], labels=[1]), 422)["message"]
    err(post(importance="ablation", target_class=1), 422, "InputError")
    err(post(importance="ablation", labels=[7]), 422, "InputError")
    err(post(importance="ablation", labels=[0, 1]), 422, "InputError")
    err(post(importance="magic"), 422, "ValidationError")
    e = err(client.post("/v1/ablate", json={"texts": ["a"] * 4, "model": "clf", "importance": "ablation"}), 413,
            "BatchTooLarge")
    assert "max_attribution_texts" in e["message"]
    err(client.post("/v1/ablate", json={"texts": ["a"], "model": "minilm", "importance": "ablation"}), 422,
        "NoPredictionHead")


# ---------------------------------------------------------------------------- /v1/probe
def test_probe_matches_python_api_and_carries_the_caveat(client, minilm, openapi):
    groups = {"he": ["he", "him"], "she": ["she", "her"]}
    templates = ["{} is a doctor.", "I saw {} at the hospital.", "{} said \"<b>hi</b>\" & left."]
    r = client.post("/v1/probe", json={"model": "minilm", "groups": groups, "templates": templates, "layers": [-1]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    got = r.json()
    validate(openapi, "ProbeOut", got)
    ref = bias_probe(minilm, groups, templates, layers=[5])
    assert got["note"] == BIAS_NOTE and "not" in got["note"] and "evidence" in got["note"]
    for g in groups:
        close(got["values"][g], ref.values[g])
    (t,) = got["tests"]
    (e,) = ref.tests
    for k in ("t", "p", "cohens_d", "hedges_g", "mean_a", "mean_b"):
        assert t[k] == pytest.approx(e[k], rel=1e-5, abs=1e-7), k
    assert t["n_a"] == t["n_b"] == 6
    # user strings come back verbatim (JSON-escaped, never interpreted)
    assert "He said \"<b>hi</b>\" & left." in [x["sentence"] for x in got["samples"]]
    assert '\\"<b>hi</b>\\" & left.' in r.text


def test_probe_validation(client):
    e = err(client.post("/v1/probe", json={"model": "minilm"}), 413, "TooManySentences")  # 12 templates x 3 words
    assert "36" in e["message"] and "12" in e["message"]
    e = err(client.post("/v1/probe", json={"model": "minilm", "templates": ["no slot here"]}), 422, "InputError")
    assert "{}" in e["message"]
    err(client.post("/v1/probe", json={"model": "minilm", "templates": ["{} ran."], "groups": {"a": ["he"]}}), 422)
    err(client.post("/v1/probe", json={"model": "minilm", "templates": []}), 422)
    err(client.post("/v1/probe", json={"model": "minilm", "templates": ["{} ran."], "layers": [6]}), 422, "InputError")
    err(client.post("/v1/probe", json={"model": "minilm", "templates": ["{} ran."], "direction": "sideways"}), 422)
    err(client.post("/v1/probe", json={"model": "tiny-marian", "templates": ["{} ran."]}), 422, "UnsupportedModel")


def test_probe_fills_templates_literally(client, minilm):
    """Words and templates are text: a word with braces is inserted as it is; format syntax is refused (422)."""
    groups = {"a": ["{x}", "{0.__class__}"], "b": ["he", "{:>99}"]}
    r = client.post("/v1/probe", json={"model": "minilm", "groups": groups, "templates": ["Then {} left."],
                                       "layers": [-1]})
    assert r.status_code == 200, r.text
    sentences = [x["sentence"] for x in r.json()["samples"]]
    assert sentences == ["Then {x} left.", "Then {0.__class__} left.", "Then he left.", "Then {:>99} left."]
    ref = bias_probe(minilm, groups, ["Then {} left."], layers=[5])
    for g in groups:
        close(r.json()["values"][g], ref.values[g])
    for template in ("{{}} x{:>10000000}", "{} met {x}.", "The {{}} is here.", "{} {0.__class__.__mro__}"):
        e = err(client.post("/v1/probe", json={"model": "minilm", "templates": [template]}), 422, "InputError")
        assert "exactly one {}" in e["message"]


def test_cli_probe_refuses_format_templates(tmp_path):
    """The CLI `probe` uses the same template check: a one-line error and exit 2 (was a KeyError traceback)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "attnscope", "probe", "--model", "minilm", "--template", "{} met {x}.",
                        "--out", str(tmp_path / "p")], capture_output=True, timeout=300)
    err_text = r.stderr.decode()
    assert r.returncode == 2, err_text
    last = err_text.strip().splitlines()[-1]
    assert last.startswith("error:") and "exactly one {}" in last and "Traceback" not in err_text


# ---------------------------------------------------------------------------- /v1/counterfactual
def test_counterfactual_matches_python_api(client, clf, openapi):
    text = "The movie was good."
    r = client.post("/v1/counterfactual", json={"text": text, "model": "clf"})
    assert r.status_code == 200, r.text
    got = r.json()
    validate(openapi, "CounterfactualOut", got)
    ref = token_interventions(clf, text)
    assert got["kind"] == "words" and [x["word"] for x in got["rows"]] == [x["word"] for x in ref]
    for g, e in zip(got["rows"], ref):
        assert g["tokens"] == e["tokens"]
        close([g["kl"], g["prob_shift"], g["attention_mse"]], [e["kl"], e["prob_shift"], e["attention_mse"]])
    alts = ["The movie was bad.", "The film was good."]
    r = client.post("/v1/counterfactual", json={"text": text, "model": "clf", "alternatives": alts,
                                                "target_class": 0})
    got = r.json()
    ref = compare_counterfactuals(clf, text, alts, target=0)
    assert got["kind"] == "alternatives" and [x["text"] for x in got["rows"]] == alts
    assert got["rows"][0]["changed_tokens"] == ["good"] and got["rows"][0]["new_tokens"] == ["bad"]
    for g, e in zip(got["rows"], ref):
        close([g["kl"], g["logit_diff"], g["attention_kl"]], [e["kl"], e["logit_diff"], e["attention_kl"]])
        assert g["target"] == 0


def test_counterfactual_validation(client):
    err(client.post("/v1/counterfactual", json={"text": "a b", "model": "clf", "mode": "replace"}), 422, "InputError")
    err(client.post("/v1/counterfactual", json={"text": "a b", "model": "clf", "mode": "swap"}), 422)
    err(client.post("/v1/counterfactual", json={"text": "a b", "model": "clf", "alternatives": []}), 422)
    err(client.post("/v1/counterfactual", json={"text": "a b", "model": "clf", "alternatives": ["c"] * 4}), 413,
        "BatchTooLarge")
    err(client.post("/v1/counterfactual", json={"text": "a b", "model": "clf", "alternatives": ["w " * 50]}), 413,
        "TooManyTokens")
    err(client.post("/v1/counterfactual", json={"text": "a b", "model": "minilm"}), 422, "NoPredictionHead")


# ---------------------------------------------------------------------------- /v1/dropout
def test_dropout_matches_python_api_and_restores_eval(app_client, minilm, openapi):
    app, client = app_client
    before = app.state.attnscope.worker.completed
    r = client.post("/v1/dropout", json={"text": "The cat sat on the mat.", "model": "minilm", "n_runs": 4, "seed": 1})
    assert r.status_code == 200, r.text
    assert app.state.attnscope.worker.completed == before + 1  # ran on the inference thread
    got = r.json()
    validate(openapi, "DropoutOut", got)
    assert not any(m.training for m in minilm.model.modules())
    ref = dropout_consistency(minilm, "The cat sat on the mat.", n_runs=4, seed=1)
    assert got["predictions"] is None  # a bare encoder: attention only
    assert got["layers"] == list(range(6)) and got["rates"] == {str(i): 0.1 for i in range(6)}
    close(got["pairwise_correlations"], ref.pairwise_correlations)
    assert len(got["pairwise_correlations"]) == 6 and got["correlation"]["max"] < 1.0  # dropout really varied
    close(got["head_cv"], ref.head_cv())
    e = err(client.post("/v1/dropout", json={"text": "a b", "model": "minilm", "n_runs": 6}), 413, "TooManyRuns")
    assert "max_runs" in e["message"]
    err(client.post("/v1/dropout", json={"text": "a b", "model": "minilm", "n_runs": 1}), 422, "ValidationError")
    err(client.post("/v1/dropout", json={"text": "a b", "model": "minilm", "p": 1.0}), 422, "ValidationError")
    e = err(client.post("/v1/dropout", json={"text": "word " * 20, "model": "minilm", "n_runs": 2,
                                             "include_maps": True}), 413, "AnswerTooLarge")  # 3 x 72 x 22^2 > 50,000
    assert "include_maps" in e["message"]


def test_dropout_classifier_maps_and_predictions(client, clf):
    r = client.post("/v1/dropout", json={"text": "A good film.", "model": "clf", "n_runs": 3, "p": 0.3,
                                         "include_maps": True, "which": "softmax"})
    assert r.status_code == 200, r.text
    got = r.json()
    ref = dropout_consistency(clf, "A good film.", n_runs=3, p=0.3, which="softmax")
    close(got["maps"]["mean"], np.round(ref.mean, 6))
    assert np.asarray(got["maps"]["std"]).shape == (2, 4, 6, 6)  # [CLS] a good film . [SEP]
    assert [p["index"] for p in got["predictions"]] == list(np.argsort(-ref.prediction_mean, kind="stable"))
    close([p["mean"] for p in got["predictions"]], np.sort(ref.prediction_mean)[::-1])
