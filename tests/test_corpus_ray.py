import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from attnscope.corpus import run_corpus
from attnscope.corpus.shards import PartsDir
from attnscope.corpus.stats import HEAD_STATS
from attnscope.errors import InputError

ray = pytest.importorskip("ray")

TEXTS = ["The cat sat on the mat.", "Attention is all you need.", "", "Short.",
         "A longer sentence with quite a few more words than the others.", "Paris is in France.",
         "Why?", "Numbers like 3.14 are tokens too.", "Heads differ.", "The end of the corpus."]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def two_threads():
    """The local engine's thread count, 2 whatever the machine (the Ray actors must use the same)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_ray_engine_equals_local_bitwise_and_resumes(local_ray, two_threads, tmp_path):
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
    res = run_corpus(src, out, "minilm", engine="ray", **kw)  # one actor with 2 threads on the 2 CPUs
    assert res.shards_resumed == 2 and res.shards_computed == 2
    assert loc.threads == res.threads == 2  # the actors report their torch thread count
    a, b = pq.read_table(loc.out), pq.read_table(res.out)
    assert a.column("text_id").to_pylist() == b.column("text_id").to_pylist()
    assert a.column("layer").to_pylist() == b.column("layer").to_pylist()
    for s in HEAD_STATS:  # same thread count, batches and kernel on one machine: the same bits
        assert np.array_equal(a.column(s).to_numpy(), b.column(s).to_numpy()), s
    assert loc.errors.read_text() == res.errors.read_text() and res.n_errors == 1
    assert pq.read_table(loc.aggregates).equals(pq.read_table(res.aggregates))
    # actors the cluster cannot place are refused, not left waiting
    with pytest.raises(InputError, match="need 4 CPUs"):
        run_corpus(src, tmp_path / "x.parquet", "minilm", engine="ray", num_workers=2, **kw)
    with pytest.raises(InputError, match="largest Ray node has 2 CPUs"):
        run_corpus(src, tmp_path / "y.parquet", "minilm", engine="ray", threads=3, **kw)
    assert not PartsDir(tmp_path / "x.parquet").exists() and not (tmp_path / "x.parquet").exists()
