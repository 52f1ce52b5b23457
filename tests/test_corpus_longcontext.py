import math

import pytest
import torch

from attnscope.capture import capture
from attnscope.corpus.longcontext import PooledOverview, pooled_overview, tile_sizes
from attnscope.errors import InputError


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    from attnscope.models import load_model, wrap_model

    tok = load_model("minilm").tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return wrap_model(LlamaForCausalLM(cfg), tok, name="tiny-llama")


def _pool(m: torch.Tensor, region, tile):
    """Reference: pool a full (Nq, Nk) map tile by tile."""
    q0, q1, k0, k1 = region
    tq, tk = tile
    w = m[q0:q1, k0:k1]
    gq, gk = math.ceil((q1 - q0) / tq), math.ceil((k1 - k0) / tk)
    mx, mean = torch.zeros(gq, gk), torch.zeros(gq, gk)
    for i in range(gq):
        for j in range(gk):
            t = w[i * tq:(i + 1) * tq, j * tk:(j + 1) * tk]
            mx[i, j], mean[i, j] = t.max(), t.mean()
    return mx, mean


TEXT = " ".join(f"word{i} and then some more text" for i in range(25))


@pytest.mark.parametrize("grid,region", [(8, None), ((5, 7), (10, 90, 3, 61))])
def test_pooled_overview_equals_pooling_the_full_map(tiny_llama, grid, region):
    full = capture(tiny_llama, TEXT, mode="full", layers=[1], heads=[0, 3], full_dtype=torch.float32)
    n = full.shape()["query"]
    ov = pooled_overview(tiny_llama, TEXT, layers=1, heads=[0, 3], grid=grid, region=region,
                         block_elements=4 * 2 * n + 1)  # several query blocks that straddle tiles
    reg = region or (0, n, 0, n)
    assert isinstance(ov, PooledOverview) and ov.region == reg and ov.tile == tile_sizes(reg, grid)
    for hi, h in enumerate([0, 3]):
        mx, mean = _pool(full.head(1, h), reg, ov.tile)
        torch.testing.assert_close(ov.max[0, hi], mx, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ov.mean[0, hi], mean, atol=1e-6, rtol=1e-5)
    # the same from the trace's stored maps
    ov2 = pooled_overview(full, grid=grid, region=region)
    torch.testing.assert_close(ov2.max, ov.max, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ov2.mean, ov.mean, atol=1e-6, rtol=1e-5)
    js = ov.to_json()
    assert len(js["max"][0][0]) == ov.max.shape[2] and js["query_tiles"][0][0] == reg[0]


def test_pooled_overview_whole_map_mass_and_errors(tiny_llama):
    ov = pooled_overview(tiny_llama, TEXT, grid=4)
    n = ov.n_query
    tq, tk = ov.tile
    sizes = torch.tensor([[min(tq, n - i * tq) * min(tk, n - j * tk) for j in range(ov.mean.shape[3])]
                          for i in range(ov.mean.shape[2])], dtype=torch.float32)
    total = (ov.mean * sizes).sum((-1, -2))  # (L, H): every row sums to 1
    torch.testing.assert_close(total, torch.full_like(total, float(n)), rtol=1e-4, atol=1e-3)
    assert ov.max.shape[:2] == (2, 4) and float(ov.max[..., 0, -1].max()) == 0.0  # causal: upper right empty
    with pytest.raises(InputError, match="outside"):
        pooled_overview(tiny_llama, TEXT, region=(0, n + 1, 0, 5))
    with pytest.raises(InputError, match="text"):
        pooled_overview(tiny_llama)


def test_long_stats_and_topk_match_eager_on_a_few_heads(tiny_llama):
    long_text = " ".join(["attention"] * 400)
    kw = {"mode": ["stats", "topk"], "layers": [0], "heads": [1, 2], "statistics": "all"}
    fast = capture(tiny_llama, long_text, block_elements=1 << 12, **kw)
    ref = capture(tiny_llama, long_text, method="eager", **kw)
    for k in ("entropy", "gini", "max"):
        torch.testing.assert_close(fast.row_stats()[k], ref.row_stats()[k], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.topk()[0].float(), ref.topk()[0].float(), atol=1e-3, rtol=1e-3)
