"""Corpus-scale statistics (Parquet, resumable, local or Ray) and long-context overviews. See docs/corpus.md."""

from .longcontext import PooledOverview, PooledRecorder, pooled_overview, tile_sizes
from .pipeline import QUANTILES, CorpusResult, CorpusSettings, aggregate, run_corpus, stream_corpus
from .reader import FORMATS, Record, read_records, read_stream
from .stats import HEAD_STATS, HeadStatsComputer, plan_batches

__all__ = [
    "run_corpus", "stream_corpus", "aggregate", "CorpusSettings", "CorpusResult", "QUANTILES",
    "HeadStatsComputer", "HEAD_STATS", "plan_batches", "read_records", "read_stream", "Record", "FORMATS",
    "pooled_overview", "PooledOverview", "PooledRecorder", "tile_sizes",
]
