"""Property tests against the server's own OpenAPI schema (hypothesis + jsonschema)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
jsonschema = pytest.importorskip("jsonschema")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnscope.server import ServerConfig, create_app  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(minilm):
    app = create_app(ServerConfig(torch_threads=1, models={"minilm": minilm}, max_text_chars=200))
    with TestClient(app, base_url="http://localhost") as c:
        yield c, c.get("/openapi.json").json()


def validator(openapi, name):
    schema = {"$ref": f"#/components/schemas/{name}", "components": openapi["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_openapi_documents_every_endpoint(api):
    _, spec = api
    paths = spec["paths"]
    for p in ("/v1/analyze", "/v1/batch", "/v1/models", "/v1/analyses", "/v1/analyses/rollout", "/healthz"):
        assert p in paths, p
    assert {"full", "stats", "topk"} <= set(spec["components"]["schemas"]["AnalyzeRequest"]["properties"]["mode"]["enum"])
    assert "422" in paths["/v1/analyze"]["post"]["responses"] and "429" in paths["/v1/analyze"]["post"]["responses"]


def test_get_endpoints_match_schema(api):
    c, spec = api
    v = validator(spec, "ModelOut")
    for m in c.get("/v1/models").json():
        v.validate(m)
    for a in c.get("/v1/analyses").json():
        validator(spec, "AnalysisOut").validate(a)
    validator(spec, "Health").validate(c.get("/healthz").json())


words = st.text(alphabet=st.sampled_from(list("abc xyz.,<>&\"'é日")), min_size=0, max_size=40)
requests = st.fixed_dictionaries(
    {"text": words},
    optional={
        "layers": st.lists(st.integers(-8, 8), max_size=3),
        "heads": st.lists(st.integers(-14, 14), max_size=3),
        "mode": st.sampled_from(["full", "stats", "topk", "bogus"]),
        "top_k": st.integers(-1, 70),
        "text_pair": words,
    },
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=requests)
def test_analyze_answers_match_schema(api, body):
    c, spec = api
    r = c.post("/v1/analyze", json=body)
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        validator(spec, "TraceOut").validate(r.json())
        s = r.json()["streams"]["self"]
        if body.get("layers") is not None:
            assert s["layers"] == sorted({x % 6 for x in body["layers"]})
    else:
        assert r.status_code in (413, 422), r.text
        validator(spec, "ErrorOut").validate(r.json())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(words, min_size=0, max_size=4))
def test_batch_answers_match_schema(api, texts):
    c, spec = api
    r = c.post("/v1/batch", json={"texts": texts})
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        validator(spec, "BatchOut").validate(r.json())
        assert len(r.json()["results"]) == len(texts)
    else:
        validator(spec, "ErrorOut").validate(r.json())
