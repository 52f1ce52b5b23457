"""Corpus-scale statistics (Parquet, resumable, local or Ray) and long-context overviews. See docs/corpus.md."""

from .longcontext import PooledOverview, PooledRecorder, pooled_overview, tile_sizes
from .pipeline import (ENGINES, QUANTILES, CorpusResult, CorpusSettings, aggregate, read_report, register_engine,
                       run_corpus, stream_corpus)
from . import ray_engine as _ray_engine  # registers engine "ray" (Ray itself is imported only when used)
from .reader import FORMATS, Record, read_records, read_stream
from .stats import HEAD_STATS, HeadStatsComputer, plan_batches

__all__ = [
    "run_corpus", "stream_corpus", "aggregate", "read_report", "CorpusSettings", "CorpusResult", "QUANTILES",
    "ENGINES", "register_engine",
    "HeadStatsComputer", "HEAD_STATS", "plan_batches", "read_records", "read_stream", "Record", "FORMATS",
    "pooled_overview", "PooledOverview", "PooledRecorder", "tile_sizes",
]
