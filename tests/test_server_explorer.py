"""The explorer's own endpoints: /v1/neuron (query·key decomposition), /v1/pooled, the trace download, truncation."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from _server_helpers import err  # noqa: E402
from attnscope.server import ServerConfig, create_app, payload  # noqa: E402

TEXT = "the cat sat on the mat because it was warm"


@pytest.fixture(scope="module")
def client(tiny):
    app = create_app(ServerConfig(torch_threads=1, models={"tiny-llama": tiny("llama"), "tiny-bert": tiny("bert"),
                                                          "tiny-mistral": tiny("mistral")},
                                  model="tiny-bert", preload=False))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def eager_attention(lm, text):
    """Reference weights from transformers' own eager attention (not attnscope's code path): (L, H, N, N)."""
    enc = lm.tokenizer(text, return_tensors="pt")
    model = lm.model
    prev = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    for m in model.modules():
        if hasattr(m, "config") and m.config is not model.config:
            m.config._attn_implementation = "eager"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(**enc, output_attentions=True)
    finally:
        model.config._attn_implementation = prev
        for m in model.modules():
            if hasattr(m, "config") and m.config is not model.config:
                m.config._attn_implementation = prev
    return torch.stack([a[0] for a in out.attentions]).float()


@pytest.mark.parametrize("model,layer,head,query", [("tiny-llama", 1, 2, 6), ("tiny-bert", 0, 2, 4),
                                                     ("tiny-mistral", 1, 3, 8)])
def test_neuron_view_decomposes_the_heads_weights(client, tiny, model, layer, head, query):
    r = client.post("/v1/neuron", json={"text": TEXT, "model": model, "layer": layer, "head": head, "query": query})
    assert r.status_code == 200, r.text
    d = r.json()
    q, k = torch.tensor(d["q"]), torch.tensor(d["k"])  # (d,), (Nk, d)
    assert q.shape[0] == 8 and k.shape == (len(d["tokens"]), 8)  # hidden 32 / 4 heads
    # scores are the sum of the element-wise products, times the scale
    assert torch.allclose(torch.tensor(d["scores"]), d["scale"] * (q[None] * k).sum(-1), atol=1e-5)
    ref = eager_attention(tiny(model.split("-")[1]), TEXT)[layer, head, query]  # (Nk,)
    assert torch.allclose(torch.tensor(d["weights"]), ref, atol=1e-4), (d["weights"], ref)
    if model == "tiny-llama":  # causal: later keys are masked
        assert d["allowed"] == [j <= query for j in range(len(d["tokens"]))]
    if model == "tiny-mistral":  # sliding window: only the last `window` keys up to the query
        window = tiny("mistral").model.config.sliding_window
        assert window < query
        assert d["allowed"] == [query - window < j <= query for j in range(len(d["tokens"]))]
        assert all(w == 0 for w, ok in zip(d["weights"], d["allowed"]) if not ok)


def test_neuron_view_bad_input(client):
    e = err(client.post("/v1/neuron", json={"text": TEXT, "model": "tiny-bert", "query": 99}), 422)
    assert "out of range" in e["message"]
    err(client.post("/v1/neuron", json={"text": TEXT, "model": "tiny-bert", "layer": 7}), 422)
    err(client.post("/v1/neuron", json={"text": TEXT, "model": "tiny-bert", "query": 10**9}), 422)


def test_pooled_overview_and_zoom(client, tiny):
    from attnscope.capture import capture

    r = client.post("/v1/pooled", json={"text": TEXT, "model": "tiny-llama", "grid": 4})
    assert r.status_code == 200, r.text
    h, a = payload.decode(r.content)
    n = h["n_query"]
    assert a["max"].shape == (2, 4, 4, 4) and h["tile"] == [-(-n // 4)] * 2 and h["causal"]
    full = capture(tiny("llama"), TEXT).weights()  # (L, H, N, N): pooled by hand as the reference
    t = h["tile"][0]
    assert float(a["max"][1, 2, 0, 0]) == pytest.approx(float(full[1, 2, :t, :t].max()), abs=2e-3)
    r = client.post("/v1/pooled", json={"text": TEXT, "model": "tiny-llama", "grid": 64, "region": [2, 6, 0, 4],
                                        "layers": [1], "heads": [2]})
    h, a = payload.decode(r.content)
    assert h["tile"] == [1, 1] and a["max"].shape == (1, 1, 4, 4)
    assert torch.allclose(torch.tensor(a["max"][0, 0]).float(), full[1, 2, 2:6, 0:4], atol=2e-3)
    err(client.post("/v1/pooled", json={"text": TEXT, "model": "tiny-llama", "region": [0, 999, 0, 4]}), 422)


def test_trace_download_and_truncation_message(client, tiny, tmp_path):
    from attnscope import AttentionTrace

    s = client.post("/v1/traces", json={"text": TEXT, "model": "tiny-bert"}).json()
    r = client.get(f"/v1/traces/{s['id']}/safetensors")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    p = tmp_path / "t.safetensors"
    p.write_bytes(r.content)
    t = AttentionTrace.load(p)
    assert t.query_tokens("self").labels(TEXT) == s["streams"]["self"]["query_tokens"]
    err(client.get("/v1/traces/nope/safetensors"), 404)
    long = "word " * (tiny("bert").max_length + 10)
    e = err(client.post("/v1/traces", json={"text": long, "model": "tiny-bert"}), 413, "TooManyTokens")
    assert "truncate" in e["message"] and "truncate=True" not in e["message"] and "--truncate" not in e["message"]
    ok = client.post("/v1/traces", json={"text": long, "model": "tiny-bert", "truncate": True}).json()
    assert ok["truncated"]["kept_tokens"] == tiny("bert").max_length
    assert len(ok["streams"]["self"]["query_tokens"]) == tiny("bert").max_length
