import numpy as np
import pyarrow.parquet as pq
import pytest

from attnscope.corpus.pipeline import run_corpus
from attnscope.corpus.shards import PartsDir
from attnscope.corpus.stats import HEAD_STATS

ray = pytest.importorskip("ray")

TEXTS = ["The cat sat on the mat.", "Attention is all you need.", "", "Short.",
         "A longer sentence with quite a few more words than the others.", "Paris is in France.",
         "Why?", "Numbers like 3.14 are tokens too.", "Heads differ.", "The end of the corpus."]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_matches_local_and_resumes(local_ray, tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    kw = dict(layers=[0, 3], heads=[1, 2], shard_size=3, batch_size=2)
    loc = run_corpus(src, tmp_path / "local.parquet", "minilm", **kw)
    # resume a local run's leftovers with Ray: keep only shards 0 and 2 of a finished local run
    out = tmp_path / "ray.parquet"
    run_corpus(src, out, "minilm", keep_parts=True, **kw)
    parts = PartsDir(out)
    for i in (1, 3):
        parts.shard_path(i).unlink()
    out.unlink()
    res = run_corpus(src, out, "minilm", engine="ray", num_workers=2, **kw)
    assert res.shards_resumed == 2 and res.shards_computed == 2
    a, b = pq.read_table(loc.out), pq.read_table(res.out)
    assert a.column("text_id").to_pylist() == b.column("text_id").to_pylist()
    assert a.column("layer").to_pylist() == b.column("layer").to_pylist()
    for s in HEAD_STATS:
        np.testing.assert_allclose(a.column(s).to_numpy(), b.column(s).to_numpy(), rtol=1e-6, atol=1e-6)
    assert loc.errors.read_text() == res.errors.read_text() and res.n_errors == 1
    exact = all(np.array_equal(a.column(s).to_numpy(), b.column(s).to_numpy()) for s in HEAD_STATS)
    print("bitwise identical:", exact)
    ag1, ag2 = pq.read_table(loc.aggregates), pq.read_table(res.aggregates)
    np.testing.assert_allclose(ag1.column("q50").to_numpy(), ag2.column("q50").to_numpy(), atol=1e-6)
