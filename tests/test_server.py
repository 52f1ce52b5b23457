"""REST API tests (FastAPI TestClient) with the packaged MiniLM and tiny random-init models."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from attnscope.server import ServerConfig, create_app  # noqa: E402
from attnscope.server.payload import MEDIA_TYPE, decode, downsample_max, encode, quantize_u8  # noqa: E402
from _server_helpers import err, occupy  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(minilm, tiny):
    cfg = ServerConfig(torch_threads=1, models={"minilm": minilm, "tiny-llama": tiny("llama"), "tiny-marian": tiny("marian")},
                       max_text_chars=2000, max_batch=4, max_json_elements=50_000, timeout_s=60)
    with TestClient(create_app(cfg), base_url="http://localhost") as c:
        yield c


def test_health_models_analyses(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["default_model"] == "minilm"
    models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert {"minilm", "smollm2", "whisper-tiny-en", "tiny-llama"} <= set(models)
    assert models["minilm"]["default"] and models["minilm"]["loaded"] and models["minilm"]["kind"] == "encoder"
    analyses = client.get("/v1/analyses").json()
    from attnscope.analysis import list_analyses

    assert [a["name"] for a in analyses] == list_analyses()


def test_analyze_full_json_matches_capture(client, minilm):
    from attnscope.capture import capture

    r = client.post("/v1/analyze", json={"text": "The cat sat on the mat.", "layers": [0, -1], "heads": [1, 3]})
    assert r.status_code == 200, r.text
    s = r.json()["streams"]["self"]
    assert s["layers"] == [0, 5] and s["heads"] == [1, 3]
    w = np.array(s["weights"])  # (layer, head, query, key)
    ref = capture(minilm, "The cat sat on the mat.", layers=[0, 5], heads=[1, 3]).weights().numpy()
    assert w.shape == ref.shape and np.abs(w - ref).max() < 1e-3
    assert np.allclose(w.sum(-1), 1, atol=1e-2)
    assert s["query_tokens"]["text"][0] == "[CLS]" and set(s["head_stats"]) >= {"entropy", "max"}


def test_analyze_modes_and_binary(client):
    r = client.post("/v1/analyze", json={"text": "Hello there.", "mode": "stats"})
    assert r.status_code == 200 and "weights" not in r.json()["streams"]["self"] or \
        r.json()["streams"]["self"]["weights"] is None
    assert len(r.json()["streams"]["self"]["stats"]["entropy"]) == 6
    r = client.post("/v1/analyze", json={"text": "Hello there.", "mode": "topk", "top_k": 2})
    assert np.array(r.json()["streams"]["self"]["topk"]["indices"]).shape[-1] == 2
    for kwargs in ({"json": {"text": "Hello there.", "format": "binary"}},
                   {"json": {"text": "Hello there."}, "headers": {"Accept": MEDIA_TYPE}}):
        r = client.post("/v1/analyze", **kwargs)
        assert r.headers["content-type"] == MEDIA_TYPE
        header, arrays = decode(r.content)
        assert arrays["weights/self"].shape == (6, 12, 5, 5) and arrays["weights/self"].dtype == np.float16
        assert header["tokens"]["input"]["text"][1] == "hello"


def test_analyze_safetensors_round_trips(client, tmp_path):
    from attnscope import AttentionTrace

    r = client.post("/v1/analyze", json={"text": "Hello there.", "format": "safetensors", "layers": [2]})
    p = tmp_path / "t.safetensors"
    p.write_bytes(r.content)
    t = AttentionTrace.load(p)
    assert t.layers["self"] == [2] and t.weights().shape == (1, 12, 5, 5)


def test_limits_and_errors(client):
    assert "0..5" in err(client.post("/v1/analyze", json={"text": "a b", "layers": [6]}), 422)["message"]
    assert "0..11" in err(client.post("/v1/analyze", json={"text": "a b", "heads": [12]}), 422)["message"]
    e = err(client.post("/v1/analyze", json={"text": "a b", "model": "bert-base-uncased"}), 404)
    assert "minilm" in e["message"] and "never downloads" in e["message"]
    err(client.post("/v1/analyze", json={"text": "a b", "model": "/etc"}), 404)
    assert err(client.post("/v1/analyze", json={"text": "x" * 2001}), 413)["type"] == "TextTooLong"
    assert err(client.post("/v1/batch", json={"texts": ["a"] * 5}), 413)["type"] == "BatchTooLarge"
    assert err(client.post("/v1/analyze", json={"text": ""}), 422)["type"] == "ValidationError"
    err(client.post("/v1/analyze", json={"text": "a", "mode": "everything"}), 422)
    err(client.post("/v1/analyze", json={"text": "a", "unexpected": 1}), 422)
    err(client.post("/v1/analyze", content=b"not json", headers={"content-type": "application/json"}), 422)
    e = err(client.post("/v1/analyze", json={"text": "word " * 400}), 413)  # 400 x 72 x 402^2 > JSON limit
    assert "format=binary" in e["message"]
    assert "512" in err(client.post("/v1/analyze", json={"text": "w " * 600, "format": "binary"}), 422)["message"]
    assert "head_stats" in err(client.post("/v1/analyses/nope", json={"text": "a b"}), 404)["message"]
    err(client.get("/v1/traces/deadbeef/overview"), 404)
    err(client.get("/nope"), 404)


def test_batch_statistics(client, minilm):
    from attnscope.capture import capture

    r = client.post("/v1/batch", json={"texts": ["A short one.", "A somewhat longer sentence here."], "layers": [1]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["layers"] == [1] and len(out["results"]) == 2
    ref = capture(minilm, "A somewhat longer sentence here.", mode="stats", layers=[1]).head_stats()["entropy"]
    got = np.array(out["results"][1]["head_stats"]["entropy"])
    assert got.shape == (1, 12) and np.allclose(got, ref.numpy(), atol=1e-4)


def test_run_analysis(client):
    r = client.post("/v1/analyses/rollout", json={"text": "The cat sat.", "params": {"head_fusion": "max"}})
    assert r.status_code == 200 and r.json()["type"] == "TokenMaps" and r.json()["meta"]["head_fusion"] == "max"
    err(client.post("/v1/analyses/rollout", json={"text": "The cat sat.", "params": {"bogus": 1}}), 422)
    err(client.post("/v1/analyses/rollout", json={}), 422)


def test_analysis_trace_parameters_take_trace_ids(client):
    """compare's `other` and head_projection's `others` are traces: over REST they are explorer trace ids."""
    from attnscope.analysis import run_analysis

    ids = [client.post("/v1/traces", json={"text": t}).json()["id"] for t in ("The cat sat.", "The dog sat.")]
    state = client.app.state.attnscope
    a, b = (state.traces.get(i) for i in ids)
    r = client.post("/v1/analyses/compare", json={"trace_id": ids[0], "params": {"other": ids[1]}})
    assert r.status_code == 200, r.text
    ref = run_analysis("compare", a, other=b).to_dict()
    got = r.json()
    assert got["type"] == "TraceComparison" and got["divergence"]["scores"].keys() == ref["divergence"]["scores"].keys()
    assert np.allclose(np.array(got["difference"], float), np.array(ref["difference"], float), atol=1e-6)
    assert np.abs(np.array(got["difference"], float)).max() > 0  # a real second trace, not the trace itself
    r = client.post("/v1/analyses/head_projection", json={"trace_id": ids[0], "params": {
        "others": [ids[1]], "method": "pca", "seed": 3}})
    assert r.status_code == 200, r.text
    assert sorted(set(r.json()["traces"])) == [0, 1] and len(r.json()["coords"]) == 2 * 6 * 12
    e = err(client.post("/v1/analyses/compare", json={"trace_id": ids[0], "params": {"other": "feedbeef"}}), 404)
    assert "params.other" in e["message"]
    err(client.post("/v1/analyses/head_projection", json={"trace_id": ids[0], "params": {"others": ["nope"]}}), 404)
    r = client.post("/v1/analyses/flow", json={"text": "The cat sat.", "params": {"outputs": [1], "residual": 0.25}})
    assert r.status_code == 200, r.text


def test_explorer_trace_endpoints(client):
    r = client.post("/v1/traces", json={"text": "The cat sat on the mat.", "text_pair": "It was happy."})
    assert r.status_code == 200, r.text
    summary = r.json()
    s = summary["streams"]["self"]
    n = len(s["query_tokens"])
    assert s["query_tokens"].count("[SEP]") == 2 and np.array(s["stats"]["entropy"]).shape == (6, 12)
    tid = summary["id"]
    assert client.post("/v1/traces", json={"text": "The cat sat on the mat.", "text_pair": "It was happy."}
                       ).json()["id"] == tid  # content-addressed: the same input is served from the cache
    h, ov = decode(client.get(f"/v1/traces/{tid}/overview").content)
    a = ov
    assert a["thumbs"].shape == (6, 12, n, n) and a["thumbs"].dtype == np.uint8 and h["layers"] == list(range(6))
    h, a = decode(client.get(f"/v1/traces/{tid}/map", params={"layer": 3, "head": 4}).content)
    assert a["map"].shape == (n, n) and a["map"].dtype == np.float16
    assert np.allclose(a["map"].astype(np.float32).sum(-1), 1, atol=1e-2)
    # short input: the thumbnail is the map itself, quantised to uint8
    assert np.abs(ov["thumbs"][3, 4] / 255 - a["map"].astype(np.float32)).max() <= 0.5 / 255 + 1e-3
    _, m = decode(client.get(f"/v1/traces/{tid}/map", params={"layer": 3, "head": "mean"}).content)
    assert np.allclose(m["map"].astype(np.float32).sum(-1), 1, atol=1e-2)
    _, ro = decode(client.get(f"/v1/traces/{tid}/rollout").content)
    assert ro["map"].shape == (n, n) and np.allclose(ro["map"].astype(np.float32).sum(-1), 1, atol=1e-2)
    err(client.get(f"/v1/traces/{tid}/map", params={"layer": 9, "head": 0}), 422)
    err(client.get(f"/v1/traces/{tid}/map", params={"layer": 0, "head": "x"}), 422)
    r = client.post("/v1/analyses/head_roles", json={"trace_id": tid})
    assert r.status_code == 200 and r.json()["type"] == "HeadScores"


def test_encoder_decoder_streams(client):
    r = client.post("/v1/traces", json={"text": "the house", "target": "das haus", "model": "tiny-marian"})
    assert r.status_code == 200, r.text
    assert list(r.json()["streams"]) == ["encoder_self", "decoder_self", "cross"]
    tid = r.json()["id"]
    h, a = decode(client.get(f"/v1/traces/{tid}/overview", params={"stream": "cross"}).content)
    cross = r.json()["streams"]["cross"]
    assert a["thumbs"].shape == (2, 4, len(cross["query_tokens"]), len(cross["key_tokens"]))
    # cross rows name the token each decoder step predicts (the decoder inputs shifted by one), as figures do
    dec = r.json()["streams"]["decoder_self"]["query_tokens"]
    assert cross["query_tokens"][:-1] == dec[1:] and cross["query_tokens"] != dec
    e = err(client.post("/v1/traces", json={"text": "the house", "model": "tiny-marian"}), 422)
    assert "target" in e["message"]


def test_generate_causal(client):
    r = client.post("/v1/generate", json={"prompt": "the cat", "model": "tiny-llama", "max_new_tokens": 3})
    assert r.status_code == 200, r.text
    g = r.json()["generation"]
    s = r.json()["streams"]["self"]
    assert len(g["token_ids"]) == 3 and len(s["query_tokens"]) == g["prompt_length"] + 3 and s["causal"]
    _, a = decode(client.get(f"/v1/traces/{r.json()['id']}/map", params={"layer": 0, "head": 0}).content)
    assert np.allclose(np.triu(a["map"].astype(np.float32), 1), 0)  # causal: nothing above the diagonal
    err(client.post("/v1/generate", json={"prompt": "x", "model": "minilm"}), 422)


def test_queue_full_429_and_timeout_504(minilm):
    cfg = ServerConfig(torch_threads=1, models={"minilm": minilm}, queue_size=1, timeout_s=0.5, preload=False)
    app = create_app(cfg)
    with TestClient(app, base_url="http://localhost") as c:
        worker = app.state.attnscope.worker
        release, blocker, loop = occupy(worker, timeout=20)
        # one request waits in the queue (and times out after 0.5 s -> 504) while a second finds it full -> 429
        results = {}

        def waiting():
            results["first"] = c.post("/v1/analyze", json={"text": "a b"})

        t = threading.Thread(target=waiting)
        t.start()
        for _ in range(100):
            if worker.waiting:
                break
            threading.Event().wait(0.01)
        e = err(c.post("/v1/analyze", json={"text": "a b"}), 429)
        assert e["type"] == "QueueFull"
        t.join(10)
        assert err(results["first"], 504)["type"] == "Timeout"
        release.set()
        blocker.join(10)
        loop.close()
        cfg.timeout_s = 120.0  # the server still works afterwards (0.5 s is too short for a request on a busy machine)
        assert c.post("/v1/analyze", json={"text": "a b", "mode": "stats"}).status_code == 200


def test_cancelled_capture_leaves_the_model_usable(minilm):
    """A job abandoned by its client stops at its next module call; the model is left as it was."""
    import torch

    from attnscope.capture import capture
    from attnscope.server.worker import InferenceWorker, JobCancelled, _current

    ref = capture(minilm, "The cat sat on the mat.").weights()
    calls = []

    def job():
        _current.job.cancelled.set()  # as if the client had timed out just now
        calls.append(1)
        return capture(minilm, "The cat sat on the mat.")

    worker = InferenceWorker(1)
    try:
        with pytest.raises(JobCancelled):
            asyncio.run(worker.run(job, timeout=60))
        again = asyncio.run(worker.run(lambda: capture(minilm, "The cat sat on the mat.").weights(), timeout=60))
    finally:
        worker.stop()
    # same maps up to float noise (the worker thread may use another torch thread count)
    assert calls == [1] and torch.allclose(again, ref, atol=2e-3) and not minilm.model.training
    assert torch.allclose(capture(minilm, "The cat sat on the mat.").weights(), ref, atol=2e-3)  # and outside it


def test_payload_round_trip_and_pooling():
    rng = np.random.default_rng(0)
    arrays = {"a": rng.random((3, 5)).astype(np.float16), "b": np.arange(7, dtype=np.int32),
              "c": quantize_u8(rng.random((2, 9)))}
    h, back = decode(encode({"x": "é<script>"}, arrays))
    assert h["x"] == "é<script>"
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k])
    m = np.zeros((100, 100), np.float32)
    m[37, 81] = 1.0
    p = downsample_max(m, 10)
    assert p.shape == (10, 10) and p.max() == 1.0 and p[3, 8] == 1.0  # a single sharp weight survives pooling
    assert np.array_equal(downsample_max(m[:5, :5], 10), m[:5, :5])


def test_default_bind_is_loopback():
    assert ServerConfig().host == "127.0.0.1"
    from typer.testing import CliRunner

    from attnscope.cli import _register, app

    _register()
    out = CliRunner().invoke(app, ["serve", "--help"])
    assert out.exit_code == 0 and "127.0.0.1" in out.output
