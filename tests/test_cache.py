import threading

import pytest
import torch

from attnscope.cache import ResultCache, cache_key, estimate_nbytes
from attnscope.errors import InputError


def test_key_is_content_hash_of_model_text_and_settings():
    k = cache_key("minilm", "a cat", {"mode": "stats", "layers": [0, 1]})
    assert k == cache_key("minilm", "a cat", {"layers": [0, 1], "mode": "stats"})  # order-free
    assert len(k) == 64
    assert k != cache_key("minilm", "a cat ", {"mode": "stats", "layers": [0, 1]})
    assert k != cache_key("smollm2", "a cat", {"mode": "stats", "layers": [0, 1]})
    assert k != cache_key("minilm", "a cat", {"mode": "stats", "layers": [0, 2]})
    assert cache_key("m", ("a", "b")) != cache_key("m", ("b", "a"))
    assert ResultCache.key("m", "t", {}) == cache_key("m", "t")


def test_bounded_by_bytes_lru():
    c = ResultCache(max_bytes=1000)
    assert c.put("a", b"x", nbytes=400) and c.put("b", b"y", nbytes=400)
    assert c.get("a") == b"x"  # a is now most recent
    assert c.put("c", b"z", nbytes=400)  # evicts b (least recently used)
    assert "b" not in c and "a" in c and "c" in c
    assert c.nbytes == 800 and c.stats().evictions == 1
    assert not c.put("huge", b"h", nbytes=1001) and "huge" not in c
    assert c.get("missing", 7) == 7
    st = c.stats()
    assert (st.hits, st.misses) == (1, 1)
    c.put("a", b"x2", nbytes=100)  # replacing frees the old size
    assert c.nbytes == 500


def test_tensor_sizes_and_get_or_compute():
    t = torch.zeros(100, 100)
    assert estimate_nbytes(t) == 40000
    assert estimate_nbytes({"a": t, "b": [t]}) >= 40000  # shared tensor counted once
    assert estimate_nbytes({"a": t, "b": [t]}) < 80000
    c = ResultCache(max_bytes=100_000)
    calls = []
    v1 = c.get_or_compute("k", lambda: calls.append(1) or t)
    v2 = c.get_or_compute("k", lambda: calls.append(1) or t)
    assert v1 is v2 and calls == [1]
    c.put("k2", torch.zeros(100, 100))  # 40 kB + 40 kB fits; a third evicts
    c.put("k3", torch.zeros(100, 100))
    assert len(c) == 2 and c.nbytes <= 100_000


def test_threads_and_validation():
    c = ResultCache(max_bytes=10_000)

    def work(i):
        for j in range(200):
            c.put(f"{i}-{j}", b"", nbytes=100)
            c.get(f"{i}-{j - 1}")

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert c.nbytes <= 10_000 and len(c) == 100
    with pytest.raises(InputError):
        ResultCache(max_bytes=-1)


def test_trace_size_counts_stats():
    from attnscope.trace import AttentionTrace, Tokens

    stats = {"self": {"entropy": torch.zeros(2, 3, 4)}}
    tr = AttentionTrace(tokens={"input": Tokens(text=list("abcd"))}, layers={"self": [0, 1]},
                        heads={"self": [0, 1, 2]}, stats=stats)
    assert estimate_nbytes(tr) >= 2 * 3 * 4 * 4
