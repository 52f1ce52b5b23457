"""POST /v1/attribute-generation: the answer equals attnscope.attribution.generation's result computed here
(a decoder-only LM and an encoder-decoder, tiny random-init models), a failed check is flagged, and bad input
is a 4xx with a one-line message."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from attnscope.attribution.generation import generation_attribution, seq2seq_attribution  # noqa: E402
from attnscope.server import ServerConfig, create_app  # noqa: E402
from _server_helpers import err  # noqa: E402

PROMPT = "the cat sat on"
URL = "/v1/attribute-generation"


@pytest.fixture(scope="module")
def models(minilm, tiny):
    import copy

    import torch

    from attnscope.models import wrap_model

    sharp = copy.deepcopy(tiny("llama").model)  # weights x5: a curved path that one IG step misses by ~14 %
    with torch.no_grad():
        for name, p in sharp.named_parameters():
            if "norm" not in name:
                p.mul_(5)
    return {"minilm": minilm, "lm": tiny("llama"), "marian": tiny("marian"),
            "sharp": wrap_model(sharp, minilm.tokenizer, name="tiny-llama-sharp")}


@pytest.fixture(scope="module")
def client(models):
    cfg = ServerConfig(torch_threads=1, models=models, max_text_chars=200, timeout_s=120, max_attribution_tokens=12,
                       max_samples=16)
    with TestClient(create_app(cfg), base_url="http://localhost") as c:
        yield c


def same(got, want):
    """JSON rows (null where NaN) against the Python result's array."""
    a = np.array([[np.nan if v is None else v for v in row] for row in got], dtype=float)
    np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_decoder_only_matches_python_api(client, models):
    r = client.post(URL, json={"prompt": PROMPT, "model": "lm", "methods": ["grad_x_input", "attnlrp"],
                               "max_new_tokens": 3, "allow_random_head": True})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["kind"] == "causal" and set(got["results"]) == {"grad_x_input", "attnlrp"}
    for m in ("grad_x_input", "attnlrp"):
        want = generation_attribution(models["lm"], PROMPT, 3, m, allow_random_head=True)
        g = got["results"][m]
        assert g["generated_ids"] == want.generated_ids and g["context_tokens"] == want.context_tokens
        same(g["scores"], want.scores)
        assert g["note"] == want.note and g["failed_steps"] == [] and g["source_scores"] is None
        np.testing.assert_allclose(g["target_logits"], want.target_logits, rtol=1e-5)
    assert [c["check"] for c in got["results"]["attnlrp"]["checks"]] == ["conservation"] * 3
    assert all(c["ok"] for c in got["results"]["attnlrp"]["checks"]) and got["failed_checks"] == []


def test_encoder_decoder_matches_python_api(client, models):
    body = {"prompt": "the cat sat on the mat", "model": "marian", "methods": ["attnlrp", "integrated_gradients"],
            "max_new_tokens": 2, "ig_steps": 8}
    r = client.post(URL, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["kind"] == "encoder-decoder"
    for m in ("attnlrp", "integrated_gradients"):
        want = seq2seq_attribution(models["marian"], body["prompt"], 2, m, ig_steps=8)
        g = got["results"][m]
        assert g["source_tokens"] == want.source_tokens and g["generated_ids"] == want.generated_ids
        same(g["source_scores"], want.source_scores)
        same(g["scores"], want.scores)
        assert [c["ok"] for c in g["checks"]] == [c["ok"] for c in want.checks]


def test_failed_check_is_flagged(client):
    """One integrated-gradients step, no refinement, on a sharpened tiny Llama misses completeness: the method is
    listed in failed_checks, the failed step in failed_steps, and a warning says so."""
    r = client.post(URL, json={"prompt": PROMPT, "model": "sharp", "methods": ["integrated_gradients"],
                               "max_new_tokens": 2, "ig_steps": 1, "ig_max_steps": 1})
    assert r.status_code == 200, r.text
    got = r.json()
    g = got["results"]["integrated_gradients"]
    assert 0 in g["failed_steps"] and got["failed_checks"] == ["integrated_gradients"]
    assert g["checks"][0]["check"] == "completeness" and g["checks"][0]["relative_error"] > 0.1
    assert any("INTEGRATED GRADIENTS DID NOT CONVERGE" in w for w in got["warnings"])


@pytest.mark.parametrize("body, status, words", [
    ({"max_new_tokens": 0}, 422, "max_new_tokens"),
    ({"max_new_tokens": 257}, 422, "max_new_tokens"),
    ({"methods": []}, 422, "methods"),
    ({"methods": ["rollout"]}, 422, "methods"),
    ({"methods": ["integrated_gradients"], "ig_steps": 17}, 413, "max_samples"),
    ({"ig_steps": 0}, 422, "ig_steps"),
    ({"max_new_tokens": 12}, 413, "max_attribution_tokens"),
    ({"max_new_tokens": 8}, 413, "prompt has 6 tokens"),  # 6 + 8 > 12: needs the tokenizer
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "x" * 201}, 413, "200"),
    ({"model": "nope"}, 404, "unknown model"),
    ({"model": "minilm"}, 422, "neither a causal language model nor an encoder-decoder"),
    ({"methods": ["integrated_gradients"], "ig_max_steps": 17}, 413, "max_samples"),
    ({"methods": ["integrated_gradients"], "ig_steps": 4, "ig_max_steps": 2}, 422, "ig_max_steps"),
    ({"surprise": 1}, 422, "surprise"),
])
def test_bad_input_is_4xx(client, body, status, words):
    full = {"prompt": PROMPT, "model": "lm", "max_new_tokens": 2, "allow_random_head": True, **body}
    e = err(client.post(URL, json=full), status)
    assert "\n" not in e["message"] and words in e["message"] + str(e.get("details")), e


def test_openapi_documents_the_endpoint(client):
    op = client.get("/openapi.json").json()["paths"][URL]["post"]
    assert {"404", "413", "422", "429", "504"} <= set(op["responses"])
