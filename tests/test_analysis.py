"""Analyses: registry behaviour, every analysis on every fixture, hand-computed expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnscope import AttentionTrace, Tokens
from attnscope.analysis import (analysis_info, estimate_memory, explain, get_analysis, list_analyses,
                                repeated_random_tokens, run_analysis)
from attnscope.analysis import results as R
from attnscope.analysis.compare import js_divergence
from attnscope.analysis.flow import flow_values, flow_values_reference
from attnscope.analysis.rollout import residual_attention
from attnscope.errors import InputError, UnknownNameError

from conftest_traces import all_fixture_traces, causal_trace, encoder_trace, repeated_trace, seq2seq_trace

EXPECTED = {"attention_graph", "compare", "distance_profile", "flow", "head_diversity", "head_projection",
            "head_roles", "head_stats", "induction", "layer_summary", "memory_estimate", "position_variance",
            "rollout"}


def one_trace(w: torch.Tensor, causal: bool = False, words: list[str] | None = None) -> AttentionTrace:
    nl, nh, n, _ = w.shape
    words = words or [f"w{i}" for i in range(n)]
    return AttentionTrace(tokens={"input": Tokens(words)}, layers={"self": list(range(nl))},
                          heads={"self": list(range(nh))}, weights={"self": w}, meta={"causal": {"self": causal}})


# ---------------------------------------------------------------- registry
def test_registry_lists_every_method():
    assert EXPECTED <= set(list_analyses())
    assert list_analyses() == sorted(list_analyses())


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        get_analysis("rolout")
    assert "rollout" in str(e.value) and "flow" in str(e.value)
    assert isinstance(e.value, InputError)


def test_unknown_parameter_is_an_error():
    with pytest.raises(UnknownNameError, match="head_fusion"):
        run_analysis("rollout", encoder_trace(), fusion="mean")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_explain_returns_docstring_citing_source(name):
    doc = explain(name)
    assert doc.splitlines()[0] == analysis_info(name).summary
    assert any(str(y) in doc for y in range(1972, 2026)), f"{name}: docstring should cite a paper (year)"


# ---------------------------------------------------------------- every analysis on every fixture
def _cases():
    for kind, trace in all_fixture_traces().items():
        for stream in trace.streams:
            for name in sorted(EXPECTED):
                if analysis_info(name).square and stream == "cross":
                    continue
                yield pytest.param(kind, stream, name, id=f"{kind}-{stream}-{name}")


def _arrays(result):
    if isinstance(result, R.HeadScores):
        return list(result.scores.values())
    if isinstance(result, R.TokenMaps):
        return [result.values]
    if isinstance(result, R.Curves):
        return list(result.series.values()) + list(result.spread.values())
    if isinstance(result, R.HeadSimilarity):
        return [result.values, result.diversity]
    if isinstance(result, R.Projection):
        return [result.coords]
    if isinstance(result, R.GraphResult):
        return list(result.centrality.scores.values())
    if isinstance(result, R.TraceComparison):
        return [result.difference, *result.divergence.scores.values()]
    if isinstance(result, R.MemoryEstimate):
        return [np.array([result.full_maps, result.fast_path_working, result.stats_output], float)]
    raise AssertionError(type(result))


_TRACES = all_fixture_traces()


@pytest.mark.parametrize("kind,stream,name", list(_cases()))
def test_every_analysis_runs_finite_deterministic(kind, stream, name):
    trace = _TRACES[kind]
    params = {"stream": stream}
    if name == "head_projection":
        params["method"] = "pca"  # t-SNE and UMAP have their own tests (slower)
    r1 = run_analysis(name, trace, **params)
    r2 = run_analysis(name, trace, **params)
    assert type(r1).__name__ == analysis_info(name).result
    for a, b in zip(_arrays(r1), _arrays(r2)):
        assert np.all(np.isfinite(a)), name
        np.testing.assert_array_equal(a, b)
    sh = trace.shape(stream)
    if isinstance(r1, R.HeadScores):
        for v in r1.scores.values():
            assert v.shape == (sh["layer"], sh["head"])
    if isinstance(r1, R.TokenMaps):
        assert r1.values.shape[1:] == (len(r1.query_tokens), sh["key"])
        np.testing.assert_allclose(r1.values.sum(-1), 1.0, atol=1e-6)  # rollout and flow rows are distributions
    if isinstance(r1, R.Projection):
        assert r1.coords.shape == (sh["layer"] * sh["head"], 2)
    if isinstance(r1, R.GraphResult):
        assert all(v.shape == (sh["query"],) for v in r1.centrality.scores.values())
    r1_dict = r1.to_dict()
    assert r1_dict["type"] == type(r1).__name__


def test_square_analyses_refuse_cross_with_advice():
    with pytest.raises(InputError, match="encoder_self"):
        run_analysis("rollout", seq2seq_trace(), stream="cross")


# ---------------------------------------------------------------- hand-computed expectations
def test_entropy_of_known_rows():
    rows = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.5, 0.25, 0.25, 0]])
    hs = run_analysis("head_stats", one_trace(rows[None, None]))
    expected = (math.log(4) + 0 + math.log(2) + 1.5 * math.log(2)) / 4
    assert hs["entropy"][0, 0] == pytest.approx(expected, abs=1e-6)
    assert hs["max"][0, 0] == pytest.approx((0.25 + 1 + 0.5 + 0.5) / 4)
    assert hs["first_token_mass"][0, 0] == pytest.approx((0.25 + 1 + 0.5 + 0.5) / 4)


def test_future_attention_ratio_zero_for_causal_positive_for_encoder():
    assert np.abs(run_analysis("head_stats", causal_trace())["future_attention_ratio"]).max() < 1e-7
    assert run_analysis("head_stats", encoder_trace())["future_attention_ratio"].min() > 0.0


def test_special_token_mass():
    w = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.0, 0.5, 0.5]])[None, None]
    t = AttentionTrace(tokens={"input": Tokens(["[CLS]", "a", "[SEP]"], special=[True, False, True])},
                       layers={"self": [0]}, heads={"self": [0]}, weights={"self": w}, meta={})
    assert run_analysis("head_stats", t)["special_token_mass"][0, 0] == pytest.approx((0.75 + 0.8 + 0.5) / 3)


CHAIN = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])[:, None]  # (L=2, H=1, 2, 2)


def test_rollout_of_known_two_layer_chain():
    r = run_analysis("rollout", one_trace(CHAIN))
    # Â1 = [[1, 0], [.5, .5]], Â2 = [[.5, .5], [0, 1]]; R = Â2 Â1
    np.testing.assert_allclose(r.values[0], [[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(r.final, [[0.75, 0.25], [0.5, 0.5]])
    assert r.layers == [0, 1]


def test_rollout_head_fusion_max_and_min():
    w = torch.stack([CHAIN[:, 0], CHAIN[:, 0].flip(-1)], 1)  # (2, 2, 2, 2): second head mirrored
    t = one_trace(w)
    # max fusion: every entry 1 -> Â = [[2/3, 1/3], [1/3, 2/3]] per layer; two layers -> [[5/9, 4/9], [4/9, 5/9]]
    np.testing.assert_allclose(run_analysis("rollout", t, head_fusion="max").final, [[5 / 9, 4 / 9], [4 / 9, 5 / 9]])
    # min fusion: every entry 0 -> only the residual identity is left
    np.testing.assert_allclose(run_analysis("rollout", t, head_fusion="min").final, np.eye(2))
    with pytest.raises(UnknownNameError):
        run_analysis("rollout", t, head_fusion="median")


def test_rollout_discards_the_smallest_weights_not_the_largest():
    a = np.array([[[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.45, 0.05]]])  # (1, 3, 3)
    out = residual_attention(a, residual=0.0, discard_ratio=1 / 3)  # drop the 3 smallest of 9
    assert (out[0, :, 2] == 0).all()  # the column of small weights is gone
    assert (out[0, :, 0] > 0.5).all()  # the largest survive
    np.testing.assert_allclose(out.sum(-1), 1.0)


def test_flow_on_graph_with_known_max_flow():
    f = run_analysis("flow", one_trace(CHAIN), normalize=False)
    # output 0 -> input 0: paths via (1,0) min(.5, 1) and via (1,1) min(.5, .5) -> 1.0
    # output 0 -> input 1: via (1,0) min(.5, 0), via (1,1) min(.5, .5) -> 0.5
    np.testing.assert_allclose(f.meta["raw"][0], [1.0, 0.5], atol=1e-8)
    np.testing.assert_allclose(f.meta["raw"][1], [0.5, 0.5], atol=1e-8)  # through (1,1) only
    fn = run_analysis("flow", one_trace(CHAIN))
    np.testing.assert_allclose(fn.final[0], [2 / 3, 1 / 3], atol=1e-8)


@pytest.mark.parametrize("seed", range(4))
def test_flow_equals_per_pair_networkx_reference(seed):
    rng = np.random.default_rng(seed)
    nl, n = 1 + seed % 3, 4 + seed
    a = rng.random((nl, n, n)) ** 3  # (L, N, N)
    if seed % 2:
        a *= np.tril(np.ones((n, n)))  # causal pattern
    a /= a.sum(-1, keepdims=True)
    a = residual_attention(a)
    np.testing.assert_allclose(flow_values(a), flow_values_reference(a), atol=1e-7)
    np.testing.assert_allclose(flow_values(a, outputs=[0, n - 1]), flow_values_reference(a, outputs=[0, n - 1]), atol=1e-7)


def test_flow_outputs_subset():
    f = run_analysis("flow", encoder_trace(), outputs=[0])
    assert f.values.shape == (1, 1, 9) and f.query_tokens == ["[CLS]"]
    with pytest.raises(InputError, match="outside"):
        run_analysis("flow", encoder_trace(), outputs=[99])


def test_head_roles_find_planted_heads():
    roles = run_analysis("head_roles", encoder_trace())
    assert (roles["previous_token"][:, 0] > 0.8).all()
    assert (roles["first_token"][:, 1] > 0.8).all()
    assert all(row[0] == "previous_token" and row[1] == "first_token" for row in roles.meta["labels"])
    assert np.all((0 <= roles["broad"]) & (roles["broad"] <= 1 + 1e-9))
    causal = run_analysis("head_roles", causal_trace())
    assert np.abs(causal["next_token"]).max() < 1e-7  # a causal head cannot look ahead


def test_delimiter_role():
    n = 4
    w = torch.zeros(1, 1, n, n)
    w[0, 0, :, 2] = 1.0  # everything attends to "."
    t = one_trace(w, words=["a", "b", ".", "c"])
    assert run_analysis("head_roles", t)["delimiter"][0, 0] == pytest.approx(1.0)


def test_induction_on_repeated_sequence():
    t = repeated_trace(period=5)
    s = run_analysis("induction", t)
    np.testing.assert_allclose(s["induction"][:, 2], 1.0)
    assert (s["induction"][:, :2] < 0.5).all()
    assert s.meta["queries"] == 5
    ids = repeated_random_tokens(1000, length=20, seed=3, prefix=[0], exclude=[0, 1, 2])
    assert ids.shape == (1, 41)
    assert torch.equal(ids[0, 1:21], ids[0, 21:]) and not set(ids[0, 1:].tolist()) & {0, 1, 2}
    assert torch.equal(ids, repeated_random_tokens(1000, length=20, seed=3, prefix=[0], exclude=[0, 1, 2]))


def test_attention_graph_centralities():
    n = 4
    w = torch.zeros(1, 1, n, n)
    w[0, 0, :, 0] = 1.0  # a star: every token attends to token 0
    g = run_analysis("attention_graph", one_trace(w), threshold=0.5)
    assert g.graph.number_of_edges() == 3
    c = g.centrality.scores
    assert c["in_degree"].tolist() == [3.0, 0.0, 0.0, 0.0]
    assert c["pagerank"].argmax() == 0
    assert np.all(np.isfinite(c["eigenvector"]))


def test_distance_profile_of_previous_token_head():
    n = 6
    w = torch.zeros(1, 1, n, n)
    w[0, 0, 0, 0] = 1.0
    for i in range(1, n):
        w[0, 0, i, i - 1] = 1.0
    c = run_analysis("distance_profile", one_trace(w, causal=True))
    np.testing.assert_allclose(c.series["layer 0"][:3], [1 / 6, 1.0, 0.0])  # only query 0 attends to itself


def test_position_variance_uses_visible_queries_only():
    w = causal_trace(layers=1, heads=1).weights()
    c = run_analysis("position_variance", causal_trace(layers=1, heads=1))
    col = w[0, 0, 3:, 3].double().numpy()
    assert c.series["layer 0"][3] == pytest.approx(col.var())


def test_memory_estimate():
    m = estimate_memory(24, 16, 512)  # BERT-large at 512 tokens, float32
    assert m.full_maps == 24 * 16 * 512 * 512 * 4
    assert m.fast_path_working == 16 * 128 * 512 * 4
    assert m.ratio > 10
    assert estimate_memory(24, 16, 512, dtype="float16").full_maps == m.full_maps // 2
    t = run_analysis("memory_estimate", causal_trace())
    assert (t.layers, t.heads, t.length) == (3, 4, 10)
    with pytest.raises(UnknownNameError):
        estimate_memory(1, 1, 1, dtype="int3")


def test_compare_jsd_and_difference():
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(math.log(2))
    a, b = encoder_trace(seed=0), encoder_trace(seed=5)
    c = run_analysis("compare", a, other=b)
    np.testing.assert_allclose(c.difference, a.weights().double().numpy() - b.weights().double().numpy())
    assert np.all(c.divergence["jsd"] > 0) and np.all(c.divergence["jsd"] <= math.log(2))
    same = run_analysis("compare", a, other=encoder_trace(seed=0))
    assert np.abs(same.divergence["jsd"]).max() < 1e-12
    shorter = encoder_trace(words=["[CLS]", "the", "cat", "sat", ".", "[SEP]"], seed=0)
    with pytest.raises(InputError, match="align='tokens'"):
        run_analysis("compare", a, other=shorter)
    aligned = run_analysis("compare", a, other=shorter, align="tokens")
    assert aligned.query_tokens == ["[CLS]", "the", "cat", "sat", ".", "[SEP]"]


def test_head_diversity_identical_heads_are_not_diverse():
    w = encoder_trace(layers=1, heads=1).weights().repeat(1, 3, 1, 1)  # (1, 3, N, N)
    d = run_analysis("head_diversity", one_trace(w))
    assert d.diversity[0] == pytest.approx(0.0, abs=1e-12)
    assert run_analysis("head_diversity", encoder_trace()).diversity.min() > 0


@pytest.mark.parametrize("method", ["tsne", pytest.param("umap", marks=pytest.mark.slow)])  # umap: ~20 s of numba JIT
def test_projection_over_many_traces(method):
    p = run_analysis("head_projection", encoder_trace(), others=[causal_trace()], method=method)
    assert p.coords.shape == (24, 2) and p.labels[0] == "L0H0/t0" and p.labels[-1] == "L2H3/t1"
    assert np.all(np.isfinite(p.coords))
    if method == "tsne":
        single = run_analysis("head_projection", encoder_trace(), method=method)
        assert single.labels[5] == "L1H1"


# ---------------------------------------------------------------- calling convention and bad parameters
def test_run_analysis_positional_second_trace():
    a, b = encoder_trace(seed=0), encoder_trace(seed=5)
    positional = run_analysis("compare", a, b)
    by_name = run_analysis("compare", a, other=b)
    np.testing.assert_array_equal(positional.difference, by_name.difference)
    np.testing.assert_allclose(positional.difference, a.weights().double().numpy() - b.weights().double().numpy())
    with pytest.raises(InputError, match="takes the trace, then"):
        run_analysis("compare", a, b, None, "position", "extra")
    with pytest.raises(InputError, match="takes the trace, then"):
        run_analysis("compare", a, b, other=b)  # other given twice
    with pytest.raises(InputError, match="the trace given to 'rollout' must be an AttentionTrace"):
        run_analysis("rollout", "trace.safetensors")


@pytest.mark.parametrize("name, params, match", [
    ("flow", {"outputs": "x"}, "outputs must be token positions"),
    ("flow", {"outputs": [0, 99]}, "position 99 is outside the sequence of 8 tokens"),
    ("flow", {"outputs": []}, "outputs must be token positions"),
    ("flow", {"residual": "abc"}, r"residual must be a number in \[0.0, 1.0\]"),
    ("distance_profile", {"max_distance": -5}, "max_distance .* must be an integer >= 1"),
    ("distance_profile", {"max_distance": 2.5}, "max_distance"),
    ("compare", {"other": "x"}, "other .* must be an AttentionTrace"),
    ("attention_graph", {"threshold": "x"}, "threshold must be a number"),
    ("attention_graph", {"threshold": float("nan")}, "threshold must be a number"),
    ("head_projection", {"seed": -1}, "seed must be an integer"),
    ("head_projection", {"perplexity": -1}, "perplexity must be a number"),
    ("head_projection", {"others": ["x"]}, r"others\[0\] must be an AttentionTrace"),
])
def test_bad_parameters_are_input_errors(name, params, match):
    with pytest.raises(InputError, match=match) as e:
        run_analysis(name, causal_trace(words=[f"w{i}" for i in range(8)]), **params)
    assert "\n" not in str(e.value)


def test_flow_accepts_one_int_output_and_negative_positions():
    t = encoder_trace()
    n = len(t.tokens["input"])
    one = run_analysis("flow", t, outputs=0)
    last = run_analysis("flow", t, outputs=[-1])
    full = run_analysis("flow", t)
    np.testing.assert_allclose(one.values[0, 0], full.values[0, 0])
    np.testing.assert_allclose(last.values[0, 0], full.values[0, n - 1])
