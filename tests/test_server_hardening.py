"""Server guarantees that need no model: every malformed request is a 4xx (validated before any model
work), numbers are bounded, Host check, the catch-all 500 (no internals, connection kept), queue
accounting after timeouts, cancellation of abandoned jobs, an offline /docs page."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx

from _server_helpers import LiveServer, err, occupy  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from attnscope.server import ServerConfig, create_app  # noqa: E402
from attnscope.server.worker import InferenceWorker, QueueFull  # noqa: E402

JSON = {"content-type": "application/json"}


def offline_config(**kw) -> ServerConfig:
    return ServerConfig(preload=False, models={}, torch_threads=1, **kw)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(offline_config()), base_url="http://localhost") as c:
        yield c


# ---------------------------------------------------------------------------- 4xx, never 500
BAD_BODIES = [  # (path, raw JSON body): each is refused by validation, before any model is loaded
    ("/v1/dropout", '{"text": "hi", "seed": 1000000000000000000000000000000}'),
    ("/v1/dropout", '{"text": "hi", "seed": -1}'),
    ("/v1/explain", '{"text": "hi", "seed": 4294967296}'),
    ("/v1/ablate", '{"texts": ["a"], "interventions": [{"type": "scale", "heads": [[0, 0]], "factor": 1e308}]}'),
    ("/v1/ablate", '{"texts": ["a"], "interventions": [{"type": "scale", "heads": [[0, 0]], "factor": Infinity}]}'),
    ("/v1/ablate", '{"texts": ["a"], "interventions": [{"type": "scale", "heads": [[0, 0]], "factor": NaN}]}'),
    ("/v1/ablate", '{"texts": ["a"], "interventions": [{"type": "zero", "heads": [[100000000000000000000, 0]]}]}'),
    ("/v1/ablate", '{"texts": ["a"], "interventions": [{"type": "knockout", "keys": [1e400]}]}'),
    ("/v1/probe", '{"groups": {"a": ["\\ud800"], "b": ["x"]}}'),
    ("/v1/probe", '{"groups": {"\\udfff": ["y"], "b": ["x"]}}'),
    ("/v1/probe", '{"templates": ["{} is \\ud83d."]}'),
    ("/v1/probe", '{"templates": ["{} ran."], "layers": []}'),
    ("/v1/analyze", '{"text": "a", "layers": [100000000000000000000]}'),
    ("/v1/analyze", '{"text": "a\\udc00b"}'),
    ("/v1/analyze", '{"text": "a", "model": "' + "m" * 2000 + '"}'),
    ("/v1/dropout", '{"text": "hi", "p": NaN}'),
    ("/v1/explain", '{"text": "hi", "ig_steps": 1000000000000}'),
    ("/v1/analyses/rollout", '{"text": "a", "params": {"residual": "abc"}}'),
    ("/v1/analyses/rollout", '{"text": "a", "params": {"residual": NaN}}'),
    ("/v1/analyses/rollout", '{"text": "a", "params": {"discard_ratio": 1.0}}'),
    ("/v1/analyses/flow", '{"text": "a", "params": {"outputs": "x"}}'),
    ("/v1/analyses/flow", '{"text": "a", "params": {"outputs": [1e300]}}'),
    ("/v1/analyses/compare", '{"text": "a", "params": {"other": "x y"}}'),
    ("/v1/analyses/compare", '{"text": "a", "params": {"other": 5}}'),
    ("/v1/analyses/head_projection", '{"text": "a", "params": {"seed": -1}}'),
    ("/v1/analyses/head_projection", '{"text": "a", "params": {"perplexity": -1}}'),
    ("/v1/analyses/head_projection", '{"text": "a", "params": {"others": [5]}}'),
    ("/v1/analyses/attention_graph", '{"text": "a", "params": {"threshold": "x"}}'),
    ("/v1/analyses/attention_graph", '{"text": "a", "params": {"layer": 10000000000}}'),
    ("/v1/analyses/distance_profile", '{"text": "a", "params": {"max_distance": -5}}'),
    ("/v1/analyses/memory_estimate", '{"text": "a", "params": {"length": 1e30}}'),
    ("/v1/analyses/rollout", '{"text": "a", "params": {"bogus": 1}}'),
    ("/v1/analyses/rollout", '{"text": "a", "params": {"stream": "\\ud800"}}'),
]


@pytest.mark.parametrize("path,body", BAD_BODIES, ids=[f"{p}:{b[:40]}" for p, b in BAD_BODIES])
def test_malformed_requests_are_422(client, path, body):
    e = err(client.post(path, content=body.encode(), headers=JSON), 422, "ValidationError")
    assert "Traceback" not in e["message"]
    assert client.app.state.attnscope.models == {}  # refused before any model work


def test_analysis_params_come_from_the_registered_signatures(client):
    """Each analysis has its own documented route whose params model matches the function's signature."""
    import inspect

    from attnscope.analysis import analysis_info, list_analyses

    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in list_analyses():
        op = spec["paths"][f"/v1/analyses/{name}"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        params_ref = schemas[ref]["properties"]["params"]["$ref"].rsplit("/", 1)[-1]
        props = schemas[params_ref]["properties"]
        sig = [p for p in list(inspect.signature(analysis_info(name).func).parameters)[1:]]
        assert list(props) == sig, name  # every parameter is accepted over REST, in the signature's order
        for p, s in props.items():  # the documented default is the function's default
            d = inspect.signature(analysis_info(name).func).parameters[p].default
            if "default" in s and isinstance(d, (int, float, str, bool, type(None))):
                assert s["default"] == d, (name, p)
        listed = {a["name"]: a for a in client.get("/v1/analyses").json()}[name]["params"]
        assert all(listed[p]["schema"] is not None for p in props), name


def test_analysis_registered_after_start_is_validated_too(client):
    """The fallback route (an analysis registered after the app was built) validates params the same way."""
    from attnscope.analysis import registry
    from attnscope.server.analysis_params import params_model

    def late(trace, flag: bool = False, count: int = 3):
        """Test-only analysis."""

    registry.register_analysis("late_test_analysis", result="HeadScores")(late)
    try:
        e = err(client.post("/v1/analyses/late_test_analysis", json={"text": "a", "params": {"flag": "maybe"}}), 422,
                "ValidationError")
        assert "params.flag" in e["message"]
        # an int parameter without declared bounds is not accepted over REST
        err(client.post("/v1/analyses/late_test_analysis", json={"text": "a", "params": {"count": 5}}), 422)
        assert list(params_model("late_test_analysis").model_fields) == ["flag"]
    finally:
        registry._REGISTRY.pop("late_test_analysis", None)
        params_model.cache_clear()


def _numbers(schema, path=""):
    if isinstance(schema, dict):
        if schema.get("type") in ("integer", "number"):
            yield path, schema
        for k, v in schema.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from _numbers(v, f"{path}/{i}")


def test_every_number_a_request_sends_is_bounded(client):
    spec = client.get("/openapi.json").json()
    request_schemas = set()
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for p in op.get("parameters", []):
                for where, s in _numbers(p["schema"], f"{path} {p['name']}"):
                    lo = "minimum" in s or "exclusiveMinimum" in s
                    assert lo and ("maximum" in s or "exclusiveMaximum" in s), where
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:
                request_schemas.add(body["$ref"].rsplit("/", 1)[-1])
    schemas = spec["components"]["schemas"]
    seen, todo = set(), list(request_schemas)
    while todo:  # request models and everything they reference
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = repr(schemas[name])
        todo += re.findall(r"#/components/schemas/([A-Za-z0-9_]+)", text)
        for where, s in _numbers(schemas[name], name):
            lo = "minimum" in s or "exclusiveMinimum" in s
            hi = "maximum" in s or "exclusiveMaximum" in s
            assert lo and hi, f"{where} is unbounded: {s}"
    assert {"DropoutRequest", "AblateRequest", "RolloutParams", "HeadProjectionParams"} <= seen


@pytest.mark.parametrize("template", ["{{}} x{:>10000000}", "{} met {x}.", "{} met {0}.", "{} is {:d}.",
                                      "{} {0.__class__.__mro__}", "The {{}} is here.", "no slot", "{} and {}",
                                      "{", "} {}"])
def test_probe_templates_are_substituted_literally_or_refused(client, template):
    r = client.post("/v1/probe", json={"templates": [template], "groups": {"a": ["he"], "b": ["she"]}})
    e = err(r, 422, "InputError")
    assert "exactly one {}" in e["message"] and "e.g. '{} is a doctor.'" in e["message"]
    assert len(r.content) < 1000 and client.app.state.attnscope.models == {}


def test_probe_length_counts_the_filled_sentence():
    with TestClient(create_app(offline_config(max_text_chars=50)), base_url="http://localhost") as c:
        long_word = "w" * 40  # the template (20 chars) and the word (40) each pass; the sentence (58) does not
        e = err(c.post("/v1/probe", json={"templates": ["{} is a doctor here."], "groups": {"a": ["he"],
                                                                                       "b": [long_word]}}), 413)
        assert "template #0" in e["message"] and "58 characters" in e["message"]


def test_fill_template_is_literal():
    from attnscope.attribution.bias import check_template, fill_template
    from attnscope.errors import InputError

    assert fill_template("Then {} left.", "{x}{0}") == "Then {x}{0} left."  # the word is never parsed
    assert fill_template("{}", "é") == "é"
    for bad in ("{{}}", "{} {x}", "{}{}", "x", "{:>9}", "{0.__class__}"):
        with pytest.raises(InputError, match="exactly one"):
            check_template(bad)


# ---------------------------------------------------------------------------- Host header
@pytest.mark.parametrize("host", ["localhost", "localhost:8765", "127.0.0.1", "127.0.0.1:9", "[::1]:8765", "LOCALHOST"])
def test_loopback_host_names_are_answered(client, host):
    assert client.get("/healthz", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", "", "192.168.1.5"])
def test_other_host_names_are_refused(client, host):
    e = err(client.get("/healthz", headers={"host": host}), 400, "BadHost")
    assert "--allowed-host" in e["message"]
    err(client.post("/v1/analyze", json={"text": "a"}, headers={"host": host}), 400, "BadHost")


def test_allowed_hosts_option():
    with TestClient(create_app(offline_config(host="0.0.0.0", allowed_hosts=["box.lan"])),
                    base_url="http://localhost") as c:
        assert c.get("/healthz", headers={"host": "box.lan:8765"}).status_code == 200
        err(c.get("/healthz", headers={"host": "other.lan"}), 400, "BadHost")
    with TestClient(create_app(offline_config(allowed_hosts=["*"])), base_url="http://anything.example") as c:
        assert c.get("/healthz").status_code == 200


def test_serve_has_allowed_host_option():
    from typer.testing import CliRunner

    from attnscope.cli import _register, app

    _register()
    out = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert out.exit_code == 0 and "--allowed-host" in out.output


def test_body_size_limit(client):
    with TestClient(create_app(offline_config(max_body_bytes=1000)), base_url="http://localhost") as c:
        err(c.post("/v1/analyze", json={"text": "x" * 2000}), 413, "BodyTooLarge")

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b"x" * 500

        err(c.post("/v1/analyze", content=chunks(), headers=JSON), 413, "BodyTooLarge")


# ---------------------------------------------------------------------------- a real server: 500s
def _client_port(r: httpx.Response) -> int:
    return r.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_internal_error_is_a_plain_500_and_keeps_the_connection():
    app = create_app(offline_config())

    @app.get("/v1/boom")
    async def boom():
        raise RuntimeError("secret internal detail /home/operator/key")

    @app.get("/v1/boom-on-worker")
    async def boom_on_worker():
        return await app.state.attnscope.run(lambda: {}["missing key"])

    with LiveServer(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        good = c.get("/healthz")
        for path in ("/v1/boom", "/v1/boom-on-worker"):
            bad = c.get(path)
            e = err(bad, 500, "InternalError")
            assert "secret" not in bad.text and "RuntimeError" not in bad.text and "KeyError" not in bad.text
            assert "missing key" not in bad.text and bad.headers.get("connection", "").lower() != "close"
            after = c.get("/healthz")
            assert after.status_code == 200
            assert _client_port(good) == _client_port(bad) == _client_port(after)  # one keep-alive connection


# ---------------------------------------------------------------------------- queue accounting and cancellation
def test_timed_out_requests_leave_the_queue():
    cfg = offline_config(queue_size=2, timeout_s=0.2)
    app = create_app(cfg)
    with TestClient(app, base_url="http://localhost") as c:
        worker = app.state.attnscope.worker
        release, t, loop = occupy(worker)
        try:  # every request below waits behind the blocker and times out: 504, never 429 (no live waiter is left)
            for _ in range(5):
                err(c.post("/v1/analyses/memory_estimate", json={"text": "a b"}), 504, "Timeout")
                assert c.get("/healthz").json()["queue_waiting"] == 0
        finally:
            release.set()
            t.join(10)
            loop.close()
        assert worker.cancelled >= 5


def test_queue_counts_live_waiters_only():
    worker = InferenceWorker(queue_size=2)
    release, t, loop = occupy(worker)

    async def scenario():
        for _ in range(3):  # two waiters time out, three times: the queue is empty again each time
            res = await asyncio.gather(*(worker.run(lambda: 1, timeout=0.05) for _ in range(2)),
                                       return_exceptions=True)
            assert all(isinstance(x, asyncio.TimeoutError) for x in res)
            assert worker.waiting == 0
        live = [asyncio.ensure_future(worker.run(lambda: 7, timeout=30)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert worker.waiting == 2
        with pytest.raises(QueueFull):  # two live waiters fill it
            await worker.run(lambda: 1, timeout=30)
        release.set()
        assert await asyncio.gather(*live) == [7, 7]

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        t.join(10)
        loop.close()
        worker.stop()


def test_abandoned_running_job_stops_at_its_next_module_call():
    import torch

    worker = InferenceWorker(queue_size=2)
    entered, go = threading.Event(), threading.Event()
    calls = []
    layer = torch.nn.Linear(2, 2)

    def slow_model():
        layer(torch.zeros(1, 2))
        calls.append(1)
        entered.set()
        go.wait(30)  # the client times out meanwhile
        for _ in range(5):  # the next module call raises JobCancelled
            layer(torch.zeros(1, 2))
            calls.append(1)
        return "finished"

    async def scenario():
        with pytest.raises(asyncio.TimeoutError):
            await worker.run(slow_model, timeout=0.1)
        assert entered.is_set()
        go.set()
        assert await worker.run(lambda: "next", timeout=30) == "next"

    try:
        asyncio.run(scenario())
        assert calls == [1] and worker.cancelled == 1
        layer(torch.zeros(1, 2))  # the hook does nothing outside a cancelled job
    finally:
        go.set()
        worker.stop()
    from attnscope.server.worker import JobCancelled, _current, _Job, check_cancelled

    with pytest.raises(JobCancelled):  # check_cancelled is public for loops without module calls
        job = _Job(lambda: None, None, None, threading.Event())
        job.cancelled.set()
        _current.job = job
        try:
            check_cancelled()
        finally:
            _current.job = None


# ---------------------------------------------------------------------------- /docs offline
def test_docs_page_is_offline_and_escaped(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)  # nothing fetched from another host
    assert "<script" not in html.lower() and "cdn" not in html.lower()
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert 'href="/openapi.json"' in html
    for path in client.get("/openapi.json").json()["paths"]:
        assert path in html
    assert "RolloutParams" in html and "&lt;= 4294967295" in html  # parameter schemas with their bounds
    assert client.get("/redoc").status_code == 404


def test_docs_page_escapes_the_document():
    from attnscope.server.docs_page import render

    html = render({"info": {"title": "<script>alert(1)</script>", "description": "<img src=x onerror=alert(1)>"},
                   "paths": {"/x<b>": {"get": {"summary": "<script>", "tags": ["<i>"]}}},
                   "components": {"schemas": {"A": {"properties": {"f<": {"type": "string",
                                                                          "description": "</table><script>"}}}}}})
    assert "<script" not in html and "<img" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html
