"""Statistics mode's fused attention (capture/fused.py) and its compiled row kernel (capture/native).

References: torch.softmax + attnscope.statistics.row_statistics on the same scores, SDPA's output, the
eager path, and the general (unfused) fast path.
"""

import hashlib
import os
import subprocess
import threading
import time

import pytest
import torch

from attnscope.capture import capture, capture_batch, fused, native
from attnscope.capture.recorders import Scratch
from attnscope.statistics import ROW_STATS, STREAMING_STATS, row_statistics
from _helpers import assert_stats_close, assert_traces_close

TEXTS = ["The animal didn't cross the street because it was too tired.", "Short one.",
         "A longer sentence that goes on about nothing in particular, so that padding matters in the batch."]


@pytest.fixture(scope="module")
def kernel_fn():
    fn = native.kernel()
    if fn is None:
        pytest.fail("the statistics kernel did not build: is a C compiler installed? (make setup installs gcc)")
    return fn


def _reference(scores, scale, allowed, rel_pos):
    """probs and (G*bq, 8) statistics from torch.softmax and attnscope.statistics.row_statistics."""
    g, bq, nk = scores.shape
    x = (scores * scale).masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(x, -1).nan_to_num(0.0)
    st = row_statistics(probs, allowed, rel_pos, 0)
    cols = [st[n].float() for n in native.KERNEL_STATS]
    return probs, torch.stack(cols, -1).reshape(g * bq, -1)


def _check_kernel_stats(stats, stats_ref, probs_ref):
    """The kernel's (G*bq, 8) statistics against the reference's; counts and argmax against probs_ref."""
    names = native.KERNEL_STATS
    got = {n: stats[:, i] for i, n in enumerate(names)}
    ref = {n: stats_ref[:, i] for i, n in enumerate(names)}
    assert_stats_close(got, ref, probs_ref.reshape(stats.shape[0], -1), ref["allowed_keys"], atol=2e-5, rtol=1e-5)


def _random_case(g=3, bq=17, nk=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(g, bq, nk, generator=gen) * 30  # wide range: weights from ~1 down to underflow
    mask = torch.rand(g, bq, nk, generator=gen) > 0.3
    mask[0, 3] = False  # a row with no allowed key
    mask[1, :, 0] = False  # key 0 masked: first-token mass 0
    return scores, mask


def test_kernel_matches_softmax_and_row_statistics(kernel_fn):
    scores, mask = _random_case()
    g, bq, nk = scores.shape
    rel_pos = torch.arange(bq, dtype=torch.float32) + 5
    probs_ref, stats_ref = _reference(scores, 0.25, mask, rel_pos)
    x = scores.clone()
    stats = torch.empty(g * bq, 8)
    offsets = torch.arange(g, dtype=torch.int64) * bq * nk
    native.native_softmax_row_stats(kernel_fn, x, 0.25, mask.view(torch.uint8), offsets, nk, None, rel_pos, stats)
    torch.testing.assert_close(x, probs_ref, atol=1e-6, rtol=1e-5)
    _check_kernel_stats(stats, stats_ref, probs_ref)
    assert stats[3].abs().max() == 0 and x[0, 3].abs().max() == 0  # no allowed key: zeros
    assert stats[bq:2 * bq, 5].abs().max() == 0


def test_kernel_shared_key_mask_causal_limit_and_threads(kernel_fn):
    """One key mask for every row (row stride 0), plus per-row causal key limits, split over threads."""
    g, bq, nk = 4, 33, 70
    scores = torch.randn(g, bq, nk, generator=torch.Generator().manual_seed(1)) * 4
    key_mask = torch.ones(g, nk, dtype=torch.bool)
    key_mask[2, 50:] = False  # padding of pair 2
    key_end = torch.arange(bq, dtype=torch.int64) + 20  # query i sees keys < i + 20
    allowed = key_mask[:, None, :] & (torch.arange(nk)[None, None, :] < key_end[None, :, None])
    rel_pos = torch.arange(bq, dtype=torch.float32) + 19
    probs_ref, stats_ref = _reference(scores, 1.0, allowed, rel_pos)
    for threads in (1, 3):
        x, stats = scores.clone(), torch.empty(g * bq, 8)
        offsets = torch.arange(g, dtype=torch.int64) * nk
        native.native_softmax_row_stats(kernel_fn, x, 1.0, key_mask.view(torch.uint8), offsets, 0, key_end, rel_pos,
                                        stats, threads=threads)
        torch.testing.assert_close(x, probs_ref, atol=1e-6, rtol=1e-5)
        _check_kernel_stats(stats, stats_ref, probs_ref)


def test_without_kernel_statistics_take_the_general_path(minilm, monkeypatch):
    general = capture(minilm, TEXTS[0], mode="stats")
    maps = capture(minilm, TEXTS[0], mode="full", method="eager", full_dtype=torch.float32)
    monkeypatch.setenv("ATTNSCOPE_NATIVE", "0")
    native.kernel.cache_clear()
    try:
        assert native.kernel() is None
        monkeypatch.setattr(fused, "stats_attention", lambda *a, **k: pytest.fail("fused path taken"))
        assert_traces_close(capture(minilm, TEXTS[0], mode="stats"), general, atol=5e-5, rtol=1e-5, probs=maps)
    finally:
        monkeypatch.delenv("ATTNSCOPE_NATIVE")
        native.kernel.cache_clear()


def test_build_is_cached_and_atomic(tmp_path):
    cc = native._compiler()
    if cc is None:
        pytest.fail("no C compiler")
    first = native.build(cc, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert native.build(cc, tmp_path) == first and first.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, first.name + ".sha256"]  # no temporary left


def _sdpa_and_stats(query, key, value, mask, causal, names, key_offset=0, qpos0=0):
    """Reference: SDPA's output, row_statistics of the eager probabilities, those probabilities and the
    allowed-key counts."""
    B, H, nq, d = query.shape
    groups = H // key.shape[1]
    k, v = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = query @ k.transpose(-1, -2) * d ** -0.5  # (B, H, Nq, Nk)
    nk = k.shape[2]
    if mask is None:
        allowed = torch.ones(B, 1, nq, nk, dtype=torch.bool)
    else:
        allowed = mask.expand(B, 1, nq, nk) if mask.shape[1] == 1 else mask
    if causal:
        allowed = allowed & torch.ones(nq, nk, dtype=torch.bool).tril()
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    out = (probs @ v).transpose(1, 2)  # (B, Nq, H, Dv)
    st = row_statistics(probs, allowed, torch.arange(nq) + qpos0, key_offset, names)
    return out, st, probs, allowed.expand(B, H, nq, nk).sum(-1)


@pytest.fixture
def torch_threads():
    """Set torch's thread count in a test (``torch_threads(n)``); the count is restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# threads 2: the blocks run on the single-threaded pool threads (native.run_on_pool)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("budget", [1 << 20, 300])  # whole maps of several pairs / query rows of one pair
def test_stats_attention_equals_sdpa_and_statistics(kernel_fn, budget, threads, torch_threads):
    torch_threads(threads)
    gen = torch.Generator().manual_seed(3)
    B, H, Hkv, n, d = 2, 4, 2, 23, 8
    q, k, v = (torch.randn(B, h, n, d, generator=gen) for h in (H, Hkv, Hkv))
    pad = torch.ones(B, n, dtype=torch.bool)
    pad[1, 17:] = False
    mask = pad[:, None, None, :].expand(B, 1, n, n)  # padding mask as transformers expands it (row stride 0)
    for m, causal in ((mask, False), (None, True), (mask & torch.ones(n, n, dtype=torch.bool).tril(), False)):
        out, st = fused.stats_attention(q, k, v, m, d ** -0.5, causal, 0, 0, ROW_STATS, Scratch(), budget=budget)
        out_ref, st_ref, probs, n_allowed = _sdpa_and_stats(q, k, v, m, causal, ROW_STATS)
        torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
        assert list(st) == list(ROW_STATS)
        assert_stats_close(st, st_ref, probs, n_allowed, atol=5e-5, rtol=1e-5)


def test_stats_attention_key_offset_and_query_offset(kernel_fn):
    """Decoding with a cache: one query at absolute position 30, keys from position 26 (a dropped window)."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, n, 8, generator=gen) for n in (1, 5, 5))
    out, st = fused.stats_attention(q, k, v, None, 8 ** -0.5, False, 30, 26, STREAMING_STATS, Scratch())
    out_ref, st_ref, _, _ = _sdpa_and_stats(q, k, v, None, False, STREAMING_STATS, key_offset=26, qpos0=30)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    assert st["first_token_mass"].abs().max() == 0  # key column 0 is position 26, not 0
    torch.testing.assert_close(st["mean_distance"], st_ref["mean_distance"], atol=1e-5, rtol=1e-5)
    assert int(st["argmax"].min()) >= 26


def _unfused(monkeypatch):
    """From here on, statistics-only sites take the general path (SDPA + recomputation)."""
    monkeypatch.setattr(fused, "applies", lambda *a, **k: False)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "mistral", "t5", "marian"])
def test_stats_only_capture_fused_equals_unfused_and_eager(tiny, monkeypatch, family):
    lm = tiny(family)
    kw = {"target": "A small target sentence."} if lm.kind == "seq2seq" else {}
    fast = capture(lm, TEXTS[0], mode="stats", statistics="all", **kw)
    eager = capture(lm, TEXTS[0], mode="stats", statistics="all", method="eager", **kw)
    maps = capture(lm, TEXTS[0], mode="full", method="eager", full_dtype=torch.float32, **kw)
    assert_traces_close(fast, eager, atol=5e-5, rtol=1e-5, probs=maps)
    _unfused(monkeypatch)
    general = capture(lm, TEXTS[0], mode="stats", statistics="all", **kw)
    assert_traces_close(fast, general, atol=5e-5, rtol=1e-5, probs=maps)


def test_fused_path_is_taken_and_output_matches_sdpa(minilm, monkeypatch):
    """On MiniLM, a statistics-only batch goes through stats_attention, the model's output is SDPA's
    within float32 rounding, and the statistics equal the general path's."""
    from attnscope.capture.api import attention_implementation
    from attnscope.capture.interface import CaptureSession, annotate_model, register, session_scope
    from attnscope.capture.recorders import StatsRecorder

    calls = []
    real = fused.stats_attention

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(fused, "stats_attention", spy)
    inputs = minilm.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = minilm.model(**inputs).last_hidden_state
    register()
    annotate_model(minilm.model)
    session = CaptureSession(recorders=[StatsRecorder()], layers={"self": None}, heads={"self": None})
    with attention_implementation(minilm.model, "attnscope"), session_scope(session), torch.no_grad():
        recorded = minilm.model(**inputs).last_hidden_state
    assert len(calls) == 6  # one per layer: computed here, not by SDPA...
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(recorded[valid], plain[valid], atol=1e-5, rtol=1e-5)  # ...but the same

    traces = capture_batch(minilm, TEXTS, mode="stats")
    assert len(calls) == 12
    _unfused(monkeypatch)
    general = capture_batch(minilm, TEXTS, mode="stats")
    assert len(calls) == 12
    for text, a, b in zip(TEXTS, traces, general):
        maps = capture(minilm, text, mode="full", method="eager", full_dtype=torch.float32)
        assert_traces_close(a, b, atol=5e-5, rtol=1e-5, probs=maps)


def test_partial_heads_and_gradients_take_the_general_path(minilm, monkeypatch):
    monkeypatch.setattr(fused, "stats_attention", lambda *a, **k: pytest.fail("fused path taken"))
    capture(minilm, TEXTS[0], mode="stats", heads=[0, 3])  # a subset of heads: SDPA + recomputation
    capture(minilm, TEXTS[0], mode=["stats", "topk"])  # another recorder needs the probabilities


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral", "marian"])
def test_generation_statistics_equal_those_of_the_full_maps(tiny, family):
    """Step by step over the KV cache (one query per step; Mistral's rolling window drops old keys, so
    key column 0 is not position 0): the fused statistics equal those of the recorded full maps."""
    from attnscope.capture.generation import generate

    lm = tiny(family)
    stats = generate(lm, "the quick brown fox", max_new_tokens=6, mode="stats", statistics="all")
    full = generate(lm, "the quick brown fox", max_new_tokens=6, mode="full", full_dtype=torch.float32)
    assert stats.token_ids == full.token_ids
    for s in full.trace.streams:
        got, want = stats.trace.row_stats(s), full.trace.row_stats(s)
        assert list(got) == list(ROW_STATS)
        assert_stats_close(got, want, full.trace.weights(s), want["allowed_keys"], atol=5e-5, rtol=1e-5,
                           msg=f"{s}: ")


def test_kernel_wrapper_rejects_what_the_c_code_would_misread(kernel_fn):
    scores, stats, rel = torch.zeros(2, 3, 4), torch.empty(6, 8), torch.zeros(3)
    with pytest.raises(ValueError, match="scores must be a contiguous CPU torch.float32"):
        native.native_softmax_row_stats(kernel_fn, scores.double(), 1.0, None, None, 0, None, rel, stats)
    with pytest.raises(ValueError, match="stats must be"):
        native.native_softmax_row_stats(kernel_fn, scores, 1.0, None, None, 0, None, rel, torch.empty(5, 8))
    with pytest.raises(ValueError, match="key_end must be"):
        native.native_softmax_row_stats(kernel_fn, scores, 1.0, None, None, 0, torch.ones(3, dtype=torch.int32), rel,
                                        stats)
    with pytest.raises(ValueError, match="mask must be uint8"):
        native.native_softmax_row_stats(kernel_fn, scores, 1.0, torch.ones(2, 4, dtype=torch.bool),
                                        torch.zeros(2, dtype=torch.int64), 0, None, rel, stats)


# ---------------------------------------------------------------- the build cache: keyed, verified, private

PLANTED_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void)
{
    const char *p = getenv("ATTNSCOPE_TEST_PLANTED_MARKER");
    FILE *f = p ? fopen(p, "w") : NULL;
    if (f) { fputs("planted code ran", f); fclose(f); }
}
void attnscope_softmax_row_stats(void) {}
"""


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A fresh ATTNSCOPE_CACHE for kernel(); its kernels/ directory (not created yet)."""
    if native._compiler() is None:
        pytest.fail("no C compiler")
    monkeypatch.setenv("ATTNSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ATTNSCOPE_NATIVE", raising=False)
    native.kernel.cache_clear()
    yield tmp_path / "cache" / "kernels"
    native.kernel.cache_clear()


def _works(fn) -> bool:
    """The loaded kernel computes a softmax row."""
    x, stats = torch.tensor([[[0.0, 0.0]]]), torch.empty(1, 8)
    native.native_softmax_row_stats(fn, x, 1.0, None, None, 0, None, torch.zeros(1), stats, threads=1)
    return torch.equal(x, torch.tensor([[[0.5, 0.5]]]))


def _no_kernel(match: str) -> None:
    with pytest.warns(RuntimeWarning, match=match):
        assert native.kernel() is None


def test_cache_is_private_and_unsafe_directories_are_refused(own_cache):
    assert _works(native.kernel())
    assert own_cache.stat().st_mode & 0o777 == 0o700
    own_cache.chmod(0o777)  # writable by others: anyone could plant a build
    native.kernel.cache_clear()
    _no_kernel("writable by group or others")
    if os.geteuid() == 0:  # only root can give the directory away
        own_cache.chmod(0o700)
        os.chown(own_cache, 12345, 12345)
        native.kernel.cache_clear()
        _no_kernel("belongs to another user")


def test_build_is_keyed_by_the_cpu(own_cache, monkeypatch):
    cc = native._compiler()
    mine = native.build(cc, own_cache)
    monkeypatch.setattr(native, "cpu_id", lambda: "x86_64\nflags=sse sse2 avx512f")  # another machine's CPU
    theirs = native.build(cc, own_cache)
    assert theirs != mine and theirs.exists() and mine.exists()  # one build per CPU, never the other's
    assert native.target_name(cc, native._FLAGS) != mine.name
    monkeypatch.undo()
    assert "flags=" in native.cpu_id() or not os.path.exists("/proc/cpuinfo")


def test_tampered_build_is_rebuilt_never_loaded(own_cache):
    cc = native._compiler()
    target = native.build(cc, own_cache)
    good = target.read_bytes()
    target.write_bytes(good[:-64] + b"\xcc" * 64)  # same size, other bytes
    with pytest.raises(RuntimeError, match="sha256"):
        native.load(target)
    with pytest.warns(RuntimeWarning, match="does not match the sha256"):
        assert native.build(cc, own_cache) == target
    assert native._verified(target) and target.read_bytes() != good[:-64] + b"\xcc" * 64
    assert _works(native.kernel())


@pytest.mark.parametrize("sidecar", ["none", "stale"])
def test_planted_build_never_runs(own_cache, tmp_path, monkeypatch, sidecar):
    """A foreign .so at the build's name (no record, or the record of the real build) is never loaded."""
    cc = native._compiler()
    own_cache.mkdir(parents=True, mode=0o700)
    target = own_cache / native.target_name(cc, native._FLAGS + native.ARCH_FLAGS[0])
    if sidecar == "stale":
        native.build(cc, own_cache)
    src = tmp_path / "planted.c"
    src.write_text(PLANTED_C)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(target), str(src)], check=True)
    marker = tmp_path / "marker"
    monkeypatch.setenv("ATTNSCOPE_TEST_PLANTED_MARKER", str(marker))
    with pytest.warns(RuntimeWarning, match="does not match the sha256"):
        fn = native.kernel()
    assert not marker.exists()  # its constructor never ran
    assert _works(fn)  # the real kernel, rebuilt in its place


def test_fallbacks_no_compiler_bad_compiler_disabled(own_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNSCOPE_NATIVE", "0")
    assert native.kernel() is None  # disabled on purpose: no warning
    monkeypatch.delenv("ATTNSCOPE_NATIVE")
    native.kernel.cache_clear()
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang
    _no_kernel("no C compiler found")
    for bad in ("/bin/false", str(tmp_path / "no-such-cc")):  # fails to compile / does not exist
        monkeypatch.setenv("CC", bad)
        native.kernel.cache_clear()
        _no_kernel("statistics kernel unavailable")
        assert not list(own_cache.glob("*.tmp"))  # a failed build leaves nothing behind


def test_fallback_read_only_cache(own_cache, monkeypatch):
    own_cache.mkdir(parents=True, mode=0o700)
    own_cache.chmod(0o500)
    try:
        if os.geteuid() == 0:  # root writes anywhere: make the directory refuse as it would a user
            def refuse(*a, **k):
                raise PermissionError(13, "Permission denied", str(own_cache))
            monkeypatch.setattr(native.tempfile, "mkstemp", refuse)
        _no_kernel("Permission denied")
        monkeypatch.undo()
        own_cache.chmod(0o700)
        native.build(native._compiler(), own_cache)
        own_cache.chmod(0o500)
        native.kernel.cache_clear()
        assert _works(native.kernel())  # a verified build in a read-only cache still loads
    finally:
        own_cache.chmod(0o700)


def test_fallback_corrupt_build_with_matching_record(own_cache):
    """A file that is not a shared library, recorded as built: dlopen fails, statistics fall back."""
    cc = native._compiler()
    own_cache.mkdir(parents=True, mode=0o700)
    target = own_cache / native.target_name(cc, native._FLAGS + native.ARCH_FLAGS[0])
    target.write_bytes(b"not an ELF file")
    (own_cache / (target.name + ".sha256")).write_text(hashlib.sha256(b"not an ELF file").hexdigest())
    _no_kernel("statistics kernel unavailable")
    assert not fused.applies(torch.zeros(1, 1, 2, 4), None, 0.0, False, {})


def test_stale_temporary_files_are_removed(own_cache):
    own_cache.mkdir(parents=True, mode=0o700)
    old, fresh = own_cache / "row_stats-x.so.abc.tmp", own_cache / "row_stats-x.so.def.tmp"
    for p in (old, fresh):
        p.write_bytes(b"half a build")
    os.utime(old, (time.time() - 2 * native.STALE_TEMP_SECONDS,) * 2)
    native.build(native._compiler(), own_cache)
    assert not old.exists() and fresh.exists()  # a build still running elsewhere keeps its file


def test_row_pool_follows_torch_threads():
    """The pool is sized by torch.get_num_threads() at each call (the CLI's --threads sets it)."""
    calls = []

    def fake(ptr, r0, r1, *rest):
        calls.append((r0, r1, threading.current_thread().name))

    scores, stats, rel = torch.zeros(1, 12, 4), torch.empty(12, 8), torch.zeros(12)
    before = torch.get_num_threads()
    try:
        for n in (3, 1, 2):
            torch.set_num_threads(n)
            calls.clear()
            native.native_softmax_row_stats(fake, scores, 1.0, None, None, 0, None, rel, stats)
            assert sorted(c[:2] for c in calls) == [(12 * t // n, 12 * (t + 1) // n) for t in range(n)]
            if n > 1:
                assert native._pool_state["pool"]._max_workers == n  # the pool this call used
                assert all(c[2].startswith("attnscope-rows") for c in calls)
    finally:
        torch.set_num_threads(before)


def test_blocks_run_on_single_threaded_pool_threads(kernel_fn, torch_threads, monkeypatch):
    """With 2 torch threads every block runs whole (matrix products and kernel) on a pool thread whose
    torch operations are single-threaded; the caller's thread count and the default of new threads
    are left as they were."""
    if not native._per_thread_torch_threads():
        pytest.skip("torch's native parallel backend: blocks take torch's team and the row pool")
    torch_threads(2)
    monkeypatch.setitem(native._pool_state, "key", None)  # a new pool: its set-up is part of the test
    seen = []
    real = fused.native_softmax_row_stats

    def spy(*args, threads=None, **kw):
        seen.append((threading.current_thread().name, torch.get_num_threads(), threads))
        return real(*args, threads=threads, **kw)

    monkeypatch.setattr(fused, "native_softmax_row_stats", spy)
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 3, 40, 8, generator=gen) for _ in range(3))
    out, st = fused.stats_attention(q, k, v, None, 8 ** -0.5, True, 0, 0, ROW_STATS, Scratch(), budget=200)
    out_ref, st_ref, probs, n_allowed = _sdpa_and_stats(q, k, v, None, True, ROW_STATS)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    assert_stats_close(st, st_ref, probs, n_allowed, atol=5e-5, rtol=1e-5)
    assert len(seen) == 3 * 8  # 40 query rows in blocks of 200 // 40 = 5, for each of 3 heads
    assert all(name.startswith("attnscope-rows") and n == 1 and t == 1 for name, n, t in seen)
    assert torch.get_num_threads() == 2
    fresh = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert fresh == [2]


def test_fused_gini_long_causal_map_against_float64(kernel_fn):
    """Statistics mode's Gini (and the kernel's entropy, max, mean distance) on a 4,096-token causal map
    (rows with 2-4 allowed keys among 4,096 columns) against an independent float64 computation."""
    import numpy as np

    n, d = 4096, 8
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 1, n, d, generator=gen) for _ in range(3))
    names = ("entropy", "max", "gini", "mean_distance", "allowed_keys")
    _, st = fused.stats_attention(q, k, v, None, d ** -0.5, True, 0, 0, names, Scratch())
    rows = [1, 2, 3, 5, 1000, n - 1]
    scores = (q[0, 0, rows].double() @ k[0, 0].double().T) * d ** -0.5  # (R, N) float64
    for i, r in enumerate(rows):
        p = torch.softmax(scores[i, : r + 1], -1).numpy()  # the allowed keys, float64
        x = np.sort(p)
        ranks = np.arange(1, r + 2)
        gini = ((2 * ranks - (r + 1) - 1) * x).sum() / ((r + 1) * x.sum())
        assert abs(float(st["gini"][0, 0, r]) - gini) < 2e-6, (r, float(st["gini"][0, 0, r]), gini)
        want = {"entropy": -(p * np.log(p)).sum(), "max": p.max(), "mean_distance": (p * (r - np.arange(r + 1))).sum()}
        for name, value in want.items():
            assert float(st[name][0, 0, r]) == pytest.approx(value, rel=1e-5, abs=2e-5), (name, r)
    assert st["allowed_keys"][0, 0, rows].tolist() == [r + 1 for r in rows]


def test_a_concurrent_process_never_sees_an_unrecorded_build(own_cache, monkeypatch):
    """Another process (a Ray actor starting at the same time) may look at any moment of a build: it
    must find no file or a recorded one, never a build without its record (it would warn and rebuild)."""
    cc = native._compiler()
    target = own_cache / native.target_name(cc, native._FLAGS + native.ARCH_FLAGS[0])
    seen = []
    real = native._write_atomic

    def watched(path, data):
        seen.append(not target.exists() or native._verified(target))  # what another process would find
        real(path, data)
        seen.append(not target.exists() or native._verified(target))

    monkeypatch.setattr(native, "_write_atomic", watched)
    assert native.build(cc, own_cache) == target and native._verified(target)
    assert seen and all(seen)
    assert not list(own_cache.glob("*.tmp"))


def test_avx512_cpus_get_512_bit_vectors_first_others_never():
    """-mprefer-vector-width=512 is tried first only where the CPU's flags include avx512f (GCC keeps
    AVX-512 Intel cores at 256-bit vectors otherwise); every CPU keeps -march=native and a bare fallback."""
    intel = "x86_64\nvendor_id=GenuineIntel\nflags=fpu sse2 avx2 fma avx512f avx512bw avx512vl"
    amd = "x86_64\nvendor_id=AuthenticAMD\nflags=fpu sse2 avx2 fma"
    arm = "aarch64\nFeatures=fp asimd"
    assert native.arch_flag_choices(intel) == (["-march=native", "-mprefer-vector-width=512"], ["-march=native"], [])
    assert native.arch_flag_choices(amd) == (["-march=native"], [])
    assert native.arch_flag_choices(arm) == (["-march=native"], [])
    assert native.ARCH_FLAGS == native.arch_flag_choices(native.cpu_id())  # this machine's
