import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnscope import AttentionTrace, InputError, TraceFormatError, Tokens
from attnscope.testing import assert_trace_close


def make_trace(L=2, H=3, N=4, causal=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(L, H, N, N, generator=g)
    if causal:
        scores = scores.masked_fill(~torch.ones(N, N, dtype=torch.bool).tril(), float("-inf"))
    toks = Tokens([f"t{i}" for i in range(N)], [(i, i + 1) for i in range(N)], [i == 0 for i in range(N)], list(range(N)))
    return AttentionTrace(tokens={"input": toks}, layers={"self": list(range(L))}, heads={"self": list(range(H))},
                          weights={"self": scores.softmax(-1)}, texts={"input": "abcd"}, model_id="m",
                          meta={"causal": {"self": causal}})


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 3), H=st.integers(1, 4), N=st.integers(1, 9), causal=st.booleans(), seed=st.integers(0, 99),
       text=st.text(max_size=20))
def test_save_load_round_trip(tmp_path_factory, L, H, N, causal, seed, text):
    t = make_trace(L, H, N, causal, seed)
    t.texts["input"] = text
    path = tmp_path_factory.mktemp("rt") / "t.safetensors"
    t.save(path, dtype=torch.float32)
    u = AttentionTrace.load(path)
    assert_trace_close(t, u, atol=0)
    assert u.texts == t.texts and u.meta == t.meta
    t.save(path)  # float16 default
    assert_trace_close(t, AttentionTrace.load(path), atol=1e-3)


def test_lazy_head_reads_one_head(tmp_path):
    t = make_trace(3, 4, 6)
    p = t.save(tmp_path / "t.safetensors", dtype=torch.float32)
    u = AttentionTrace.load(p)
    assert not isinstance(u._weights["self"], torch.Tensor)  # nothing read yet
    torch.testing.assert_close(u.head(2, 1), t.weights()[2, 1])
    assert not isinstance(u._weights["self"], torch.Tensor)  # still lazy after one head


def test_foreign_corrupt_and_future_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(TraceFormatError, match="not an attnscope trace"):
        AttentionTrace.load(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(TraceFormatError, match="not a readable"):
        AttentionTrace.load(tmp_path / "junk.safetensors")
    t = make_trace()
    t.schema_version = 99
    t.save(tmp_path / "future.safetensors")
    with pytest.raises(TraceFormatError, match="schema version 99"):
        AttentionTrace.load(tmp_path / "future.safetensors")
    p = make_trace().save(tmp_path / "ok.safetensors")
    data = p.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFormatError):
        AttentionTrace.load(tmp_path / "cut.safetensors").weights()
    with pytest.raises(TraceFormatError, match="no such"):
        AttentionTrace.load(tmp_path / "missing.safetensors")


def test_sel_and_named_reductions():
    t = make_trace(3, 4, 5)
    s = t.sel(layer=[0, 2], head=1)
    assert s.layers["self"] == [0, 2] and s.heads["self"] == [1]
    torch.testing.assert_close(s.weights()[1, 0], t.weights()[2, 1])
    assert t.mean("head").shape == (3, 5, 5)
    torch.testing.assert_close(t.mean("layer"), t.weights().mean(0))
    with pytest.raises(InputError, match="holds layers 0..2"):
        t.sel(layer=7)
    with pytest.raises(Exception, match="valid dimensions"):
        t.mean("heads")


def test_shape_mismatch_is_explained():
    with pytest.raises(InputError, match="key tokens"):
        AttentionTrace(tokens={"input": Tokens(["a", "b"])}, layers={"self": [0]}, heads={"self": [0]},
                       weights={"self": torch.ones(1, 1, 3, 3) / 3})


def test_partial_trace_keeps_model_indices(tmp_path):
    t = make_trace(3, 4, 4).sel(layer=[1, 2], head=[0, 3])
    u = AttentionTrace.load(t.save(tmp_path / "p.safetensors"))
    assert u.layers["self"] == [1, 2] and u.heads["self"] == [0, 3]
    torch.testing.assert_close(u.head(2, 3), t.weights()[1, 1], atol=1e-3, rtol=0)


def test_stats_from_maps_match_definition():
    t = make_trace(1, 1, 4, causal=True)
    st_ = t.row_stats()
    w = t.weights()[0, 0]
    ent = -(w[w > 0] * w[w > 0].log())
    assert abs(st_["entropy"][0, 0, 0].item()) < 1e-6  # first causal row attends to one key
    row = w[3]
    torch.testing.assert_close(st_["entropy"][0, 0, 3], -(row * row.log()).sum())
    assert st_["allowed_keys"][0, 0].tolist() == [1, 2, 3, 4]
    assert ent.numel() == 10


def test_unknown_name_error_plural_of_analysis():
    from attnscope.errors import UnknownNameError

    assert "valid analyses: rollout" in str(UnknownNameError("analysis", "x", ["rollout"]))
    assert "valid models: minilm" in str(UnknownNameError("model", "x", ["minilm"]))
