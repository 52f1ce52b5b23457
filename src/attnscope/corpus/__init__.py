"""Corpus-scale statistics (Parquet, resumable, local or Ray) and long-context overviews. See docs/corpus.md.

Names are imported on first use (torch and pyarrow stay unimported until then, so `attnscope corpus --help`
starts fast). Any name taken from the package first imports ``ray_engine``, which registers the engine
"ray" (Ray itself is imported only when that engine runs).
"""

import importlib

from .._lazy import lazy_exports

_EXPORTS = {
    "PooledOverview": ".longcontext", "PooledRecorder": ".longcontext", "pooled_overview": ".longcontext",
    "tile_sizes": ".longcontext",
    "ENGINES": ".pipeline", "QUANTILES": ".pipeline", "CorpusResult": ".pipeline", "CorpusSettings": ".pipeline",
    "aggregate": ".pipeline", "read_report": ".pipeline", "register_engine": ".pipeline", "run_corpus": ".pipeline",
    "stream_corpus": ".pipeline",
    "FORMATS": ".reader", "Record": ".reader", "read_records": ".reader", "read_stream": ".reader",
    "HEAD_STATS": ".stats", "HeadStatsComputer": ".stats", "plan_batches": ".stats",
}
_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def load_engines() -> None:
    """Import every engine module shipped with attnscope so each registers itself (``ray_engine``: "ray")."""
    importlib.import_module(".ray_engine", __name__)


def __getattr__(name: str):
    load_engines()  # engine "ray" is registered before any engine is looked up
    return _lazy_getattr(name)


__all__ = [
    "run_corpus", "stream_corpus", "aggregate", "read_report", "CorpusSettings", "CorpusResult", "QUANTILES",
    "ENGINES", "register_engine",
    "HeadStatsComputer", "HEAD_STATS", "plan_batches", "read_records", "read_stream", "Record", "FORMATS",
    "pooled_overview", "PooledOverview", "PooledRecorder", "tile_sizes",
]
