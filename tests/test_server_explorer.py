"""The explorer's own endpoints: /v1/neuron (query·key decomposition), /v1/pooled, the trace download, truncation."""

from __future__ import annotations

import warnings

import numpy as np
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


# ---------------------------------------------------------------------------- comparing two saved traces
OTHER = "the dog sat on the rug because it was cold"  # as many tokens as TEXT


def _jsd_reference(wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (nats) per head, mean over query rows, computed here from its definition."""
    m = 0.5 * (wa + wb)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_a = np.nansum(np.where(wa > 0, wa * np.log(wa / m), 0.0), -1)
        kl_b = np.nansum(np.where(wb > 0, wb * np.log(wb / m), 0.0), -1)
    return (0.5 * kl_a + 0.5 * kl_b).mean(-1)  # (L, H)


def test_compare_two_uploaded_traces(client, tiny, tmp_path):
    from attnscope import AttentionTrace
    from attnscope.capture import capture

    paths = []
    for i, text in enumerate((TEXT, OTHER)):
        paths.append(capture(tiny("bert"), text).save(tmp_path / f"{i}.safetensors"))
    ids = []
    for p in paths:
        r = client.post("/v1/traces/upload", content=p.read_bytes(),
                        headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        s = r.json()
        assert s["uploaded"] and s["streams"]["self"]["layers"] == [0, 1] and s["id"].startswith("upload-")
        ids.append(s["id"])
    r = client.post("/v1/compare", json={"a": ids[0], "b": ids[1]})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["type"] == "TraceComparison" and "difference" not in d and d["texts"]["b"]["input"] == OTHER
    wa, wb = (AttentionTrace.load(p).weights("self").numpy().astype(np.float64) for p in paths)  # (L, H, N, N)
    jsd = np.array(d["divergence"]["scores"]["jsd"])
    assert np.allclose(jsd, _jsd_reference(wa, wb), atol=1e-4), (jsd, _jsd_reference(wa, wb))
    mad = np.array(d["divergence"]["scores"]["mean_abs_difference"])
    assert np.allclose(mad, np.abs(wa - wb).mean((-1, -2)), atol=1e-5)
    # the current view (a /v1/traces id) as side A, an uploaded file as side B: the same answer
    cur = client.post("/v1/traces", json={"text": TEXT, "model": "tiny-bert"}).json()["id"]
    d2 = client.post("/v1/compare", json={"a": cur, "b": ids[1]}).json()
    assert np.allclose(np.array(d2["divergence"]["scores"]["jsd"]), jsd, atol=2e-3)  # float16 file vs float32


class _Boom:
    def __reduce__(self):
        return (exec, ("import builtins; builtins.__attnscope_unpickled__ = True",))


def test_upload_refuses_what_is_not_a_trace(client, tmp_path):
    import builtins
    import pickle

    from safetensors.torch import save_file

    e = err(client.post("/v1/traces/upload", content=b"hello, not a trace" * 10), 400)
    assert "not a .safetensors file" in e["message"] and "\n" not in e["message"]
    e = err(client.post("/v1/traces/upload", content=pickle.dumps(_Boom())), 400)  # never unpickled
    assert "not a .safetensors file" in e["message"] and not hasattr(builtins, "__attnscope_unpickled__")
    torch.save({"x": _Boom()}, tmp_path / "model.pt")
    err(client.post("/v1/traces/upload", content=(tmp_path / "model.pt").read_bytes()), 400)
    assert not hasattr(builtins, "__attnscope_unpickled__")
    save_file({"w": torch.zeros(3)}, tmp_path / "plain.safetensors")
    e = err(client.post("/v1/traces/upload", content=(tmp_path / "plain.safetensors").read_bytes()), 400)
    assert "not an attnscope trace" in e["message"] and str(tmp_path) not in e["message"]
    assert "upload.safetensors" not in e["message"] and "\n" not in e["message"]
    err(client.post("/v1/traces/upload", content=b""), 400)
    err(client.post("/v1/traces/upload", content=b"\0" * (ServerConfig().max_body_bytes + 1)), 413)  # bounded


def test_compare_says_what_cannot_be_compared(client, tiny, tmp_path):
    from attnscope.capture import capture

    def up(trace, name):
        data = trace.save(tmp_path / f"{name}.safetensors").read_bytes()
        return client.post("/v1/traces/upload", content=data).json()["id"]

    full = up(capture(tiny("bert"), TEXT), "full")
    two_heads = up(capture(tiny("bert"), TEXT, heads=[0, 1]), "two")
    longer = up(capture(tiny("bert"), TEXT + " and dry"), "longer")
    e = err(client.post("/v1/compare", json={"a": full, "b": two_heads}), 422)
    assert "4 heads" in e["message"] and "2 heads" not in e["message"] and "× 2" in e["message"]
    assert "same layers and heads" in e["message"]
    e = err(client.post("/v1/compare", json={"a": full, "b": longer}), 422)
    assert "equal lengths" in e["message"] and "shared tokens" in e["message"]
    r = client.post("/v1/compare", json={"a": full, "b": longer, "align": "tokens"})
    assert r.status_code == 200, r.text
    err(client.post("/v1/compare", json={"a": full, "b": "nope"}), 404)
    err(client.post("/v1/compare", json={"a": full, "b": full, "stream": "cross"}), 422)


# ---------------------------------------------------------------------------- the first view in one answer
WORDS = "the model reads every sentence and each head attends to some other token while layers build meaning".split()


def _text_of(lm, n_tokens):
    words = [WORDS[i % len(WORDS)] for i in range(n_tokens)]
    while len(lm.tokenizer(" ".join(words))["input_ids"]) > n_tokens:
        words.pop()
    return " ".join(words)


@pytest.mark.parametrize("model,n_tokens", [("tiny-llama", 128), ("tiny-bert", 100)])  # equal / unequal bins
def test_trace_answer_carries_the_model_views_thumbnails(client, tiny, model, n_tokens):
    from attnscope.capture import capture

    lm = tiny(model.split("-")[1])
    text = _text_of(lm, n_tokens)
    r = client.post("/v1/traces", json={"text": text, "model": model, "overview": True},
                    headers={"Accept": payload.MEDIA_TYPE})
    assert r.status_code == 200 and r.headers["content-type"] == payload.MEDIA_TYPE, r.text[:300]
    h, arrays = payload.decode(r.content)
    st = h["streams"]["self"]
    n = len(st["query_tokens"])
    assert n > payload.THUMB_SIZE
    # references computed here from the trace's own maps: max-pooled by hand, statistics from their definitions
    w = capture(lm, text).weights("self").numpy().astype(np.float64)  # (L, H, N, N), the trace's float16 values
    edges = np.floor(np.arange(payload.THUMB_SIZE + 1) * n / payload.THUMB_SIZE).astype(int)
    ref = np.zeros(w.shape[:2] + (payload.THUMB_SIZE,) * 2)
    for a in range(payload.THUMB_SIZE):
        for b in range(payload.THUMB_SIZE):
            ref[:, :, a, b] = w[:, :, edges[a]:edges[a + 1], edges[b]:edges[b + 1]].max((-1, -2))
    thumbs = arrays["overview/self"]
    assert thumbs.dtype == np.uint8 and thumbs.shape == ref.shape
    assert np.abs(thumbs.astype(np.float64) - ref * 255).max() <= 0.5 + 1e-3  # rounded to the nearest step
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(w > 0, w * np.log(w), 0.0).sum(-1)  # (L, H, N)
    allowed = np.arange(1, n + 1) if model == "tiny-llama" else np.full(n, n)
    dist = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    expect = {"entropy": ent.mean(-1), "max": w.max(-1).mean(-1), "first_token_mass": w[..., 0].mean(-1),
              "mean_distance": (w * dist).sum(-1).mean(-1),
              "normalized_entropy": (ent / np.maximum(np.log(allowed), 1e-9)).mean(-1)}
    for k, v in expect.items():
        assert np.allclose(np.array(st["stats"][k]), v, atol=1e-4), k
    # the same summary as the JSON answer; GET .../overview answers the same thumbnails
    j = client.post("/v1/traces", json={"text": text, "model": model}).json()
    assert j["id"] == h["id"] and j["streams"] == h["streams"]
    _, ov = payload.decode(client.get(f"/v1/traces/{h['id']}/overview").content)
    assert np.array_equal(ov["thumbs"], thumbs)
