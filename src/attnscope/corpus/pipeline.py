"""The corpus pipeline: records → shards → per-text per-head statistics → Parquet, resumable.

Outputs of :func:`run_corpus` (all written atomically):

- ``out`` (Parquet): one row per (text, layer, head): ``text_id, row, n_tokens, original_tokens, layer,
  head`` and each head statistic (the mean over the text's query rows of entropy, max, sparsity,
  effective_positions, first_token_mass, mean_distance, allowed_keys by default, ``statistics=`` to
  choose, ``"all"`` to add gini), rows in input order.
- ``aggregates`` (Parquet, default ``<out stem>.heads.parquet``): one row per (layer, head, statistic):
  ``n_texts, mean, std, min, q05, q25, q50, q75, q95, max`` over the texts (each text weighs 1).
- ``errors`` (JSON lines, default ``<out stem>.errors.jsonl``): ``{"row", "id", "error"}`` for every row
  that was empty, undecodable, invalid or over-long — nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..capture.interface import DEFAULT_BLOCK_ELEMENTS
from ..errors import InputError
from ..models import LoadedModel
from .reader import Record, count_records, read_records, read_stream
from .shards import PartsDir, atomic_path, stats_schema, stats_table
from ..statistics import ROW_STATS
from .stats import HeadStatsComputer, head_stat_names

__all__ = ["CorpusSettings", "CorpusResult", "run_corpus", "process_shard", "aggregate", "stream_corpus",
           "default_paths", "QUANTILES"]

QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class CorpusSettings:
    """Everything that changes the numbers (recorded in the manifest; resuming needs the same)."""

    model: str
    layers: list[int] | None = None
    heads: list[int] | None = None
    max_tokens: int | None = None
    truncate: bool = False
    batch_size: int = 32
    max_batch_tokens: int = 16384
    shard_size: int = 512
    block_elements: int = DEFAULT_BLOCK_ELEMENTS
    text_field: str = "text"
    id_field: str | None = None
    format: str | None = None
    statistics: list[str] | None = None  # head statistics; None = the default (head_stat_names)

    def computer(self, lm: LoadedModel | None = None) -> HeadStatsComputer:
        return HeadStatsComputer(lm if lm is not None else self.model, layers=self.layers, heads=self.heads,
                                 max_tokens=self.max_tokens, truncate=self.truncate,
                                 block_elements=self.block_elements, statistics=self.statistics)


@dataclass
class CorpusResult:
    out: Path
    aggregates: Path
    errors: Path
    n_rows: int = 0  # input rows
    n_texts: int = 0  # rows with statistics
    n_errors: int = 0
    shards_computed: int = 0
    shards_resumed: int = 0
    seconds: float = 0.0
    tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def default_paths(out: str | os.PathLike, aggregates: str | os.PathLike | None = None,
                  errors: str | os.PathLike | None = None) -> tuple[Path, Path, Path]:
    out = Path(out)
    stem = out.with_suffix("") if out.suffix else out
    return (out, Path(aggregates) if aggregates else stem.with_name(stem.name + ".heads.parquet"),
            Path(errors) if errors else stem.with_name(stem.name + ".errors.jsonl"))


# ---------------------------------------------------------------------------- one shard
def process_shard(computer: HeadStatsComputer, records: Sequence[Record], batch_size: int, max_batch_tokens: int,
                  on_batch: Callable[[int, int], None] | None = None) -> tuple[pa.Table, list[dict[str, Any]], int]:
    """Statistics of one shard: (table in input order, error rows, tokens processed). Used by every engine."""
    errors: list[dict[str, Any]] = []
    encoded = []
    for r in records:
        if r.error is not None:
            errors.append({"row": r.row, "id": r.id, "error": r.error})
            continue
        try:
            encoded.append((r, computer.encode(r.row, r.text)))  # type: ignore[arg-type]
        except InputError as e:
            errors.append({"row": r.row, "id": r.id, "error": str(e)})
    if on_batch is not None and errors:
        on_batch(len(errors), 0)
    items = [e for _, e in encoded]
    values = computer.compute_all(items, batch_size, max_batch_tokens, on_batch) if items else \
        np.zeros((0, len(computer.layers), len(computer.heads), len(computer.statistics)), np.float32)
    table = stats_table([r.row for r, _ in encoded], [r.id for r, _ in encoded], [e.n_tokens for e in items],
                        [e.original_tokens for e in items], computer.layers, computer.heads, values,
                        computer.statistics)
    return table, errors, sum(e.n_tokens for e in items)


def shards_of(records: Iterable[Record], shard_size: int) -> Iterator[tuple[int, list[Record]]]:
    shard: list[Record] = []
    index = 0
    for r in records:
        shard.append(r)
        if len(shard) >= shard_size:
            yield index, shard
            index, shard = index + 1, []
    if shard:
        yield index, shard


# ---------------------------------------------------------------------------- aggregates
def aggregate(table: pa.Table, quantiles: Sequence[float] = QUANTILES) -> pa.Table:
    """Per (layer, head, statistic): n_texts, mean, std, min, quantiles, max over the texts of ``table``
    (every statistic column it has)."""
    qnames = [f"q{int(round(q * 100)):02d}" for q in quantiles]
    cols: dict[str, list] = {k: [] for k in ["layer", "head", "statistic", "n_texts", "mean", "std", "min",
                                             *qnames, "max"]}
    if table.num_rows:
        layer = table.column("layer").to_numpy()
        head = table.column("head").to_numpy()
        pairs = np.unique(np.stack([layer, head], 1), axis=0)
        order = np.lexsort((head, layer))
        layer_s, head_s = layer[order], head[order]
        bounds = np.flatnonzero(np.diff(layer_s.astype(np.int64) * 65536 + head_s)) + 1
        groups = np.split(order, bounds)
        for s in [c for c in table.column_names if c in ROW_STATS]:
            x = table.column(s).to_numpy()
            for (l, h), g in zip(pairs, groups):
                v = x[g].astype(np.float64)
                qs = np.quantile(v, quantiles)
                cols["layer"].append(int(l)), cols["head"].append(int(h)), cols["statistic"].append(s)
                cols["n_texts"].append(len(v)), cols["mean"].append(v.mean()), cols["std"].append(v.std())
                cols["min"].append(v.min()), cols["max"].append(v.max())
                for name, q in zip(qnames, qs):
                    cols[name].append(float(q))
    schema = pa.schema([("layer", pa.int16()), ("head", pa.int16()), ("statistic", pa.string()),
                        ("n_texts", pa.int64())] + [(k, pa.float64()) for k in ["mean", "std", "min", *qnames, "max"]])
    t = pa.table(cols, schema=schema)
    return t.sort_by([("layer", "ascending"), ("head", "ascending")]) if t.num_rows else t


# ---------------------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar on stderr (texts done / total, texts per second, tokens per second, ETA)."""

    def __init__(self, enabled: bool, total: int | None, description: str):
        self.enabled = enabled
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                               TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                               transient=False)
            self._task = self._p.add_task(description, total=total, rate="")
            self._p.start()
        self._t0 = time.perf_counter()
        self._done = 0
        self._tokens = 0

    def skip(self, n: int) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=n)

    def advance(self, n: int, tokens: int) -> None:
        self._done += n
        self._tokens += tokens
        if self._p is not None:
            dt = max(time.perf_counter() - self._t0, 1e-9)
            self._p.update(self._task, advance=n,
                           rate=f"{self._done / dt:,.1f} texts/s {self._tokens / dt:,.0f} tok/s")

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


# ---------------------------------------------------------------------------- the run
def _manifest(settings: CorpusSettings, source: str, lm_name: str, layers: list[int], heads: list[int]) -> dict:
    d = asdict(settings)
    d.update(model=lm_name, layers=layers, heads=heads, source=str(Path(source).resolve()) if source != "-" else "-",
             statistics=list(head_stat_names(settings.statistics)), schema=1)
    for k in ("batch_size", "max_batch_tokens", "block_elements"):  # do not change the numbers
        d.pop(k)
    return d


def run_corpus(source: str | os.PathLike, out: str | os.PathLike, model: LoadedModel | str = "minilm", *,
               aggregates: str | os.PathLike | None = None, errors: str | os.PathLike | None = None,
               layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
               max_tokens: int | None = None, truncate: bool = False, batch_size: int = 32,
               max_batch_tokens: int = 16384, shard_size: int = 512, text_field: str = "text",
               id_field: str | None = None, format: str | None = None, engine: str = "local",
               address: str | None = None, num_workers: int | None = None, progress: bool = False,
               overwrite: bool = False, keep_parts: bool = False, quantiles: Sequence[float] = QUANTILES,
               block_elements: int = DEFAULT_BLOCK_ELEMENTS, statistics: Sequence[str] | str | None = None
               ) -> CorpusResult:
    """Per-text per-head statistics of a corpus file (txt / jsonl / csv / parquet, or ``"-"`` for stdin).

    Resumable: rerunning the same command after a crash or kill computes only the missing shards
    (``shard_size`` rows each). ``engine="ray"`` distributes shards over Ray actors, one model each
    (``address``: a Ray cluster address such as ``"auto"``; ``num_workers``: actors, default the
    cluster's CPUs); results are the same as ``engine="local"``. ``statistics``: the head statistics
    (default all but Gini, whose per-row sort costs more than the rest; ``"all"`` adds it). See the
    module docstring for the outputs.
    """
    head_stats = head_stat_names(statistics)  # validates before anything is written
    if engine not in ("local", "ray"):
        raise InputError(f"unknown engine {engine!r}; valid engines: local, ray")
    for name, v in (("batch_size", batch_size), ("shard_size", shard_size), ("max_batch_tokens", max_batch_tokens)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    source = str(source)
    out_p, agg_p, err_p = default_paths(out, aggregates, errors)
    parts = PartsDir(out_p)
    if out_p.exists() and not parts.exists() and not overwrite:
        raise InputError(f"{out_p} exists (a finished run); pass --overwrite to compute it again")
    if source == "-" and engine == "ray":
        raise InputError("stdin cannot be read by a Ray run; write it to a file first")
    t0 = time.perf_counter()
    model_name = model if isinstance(model, str) else model.name
    settings = CorpusSettings(model=model_name, layers=list(layers) if layers is not None else None,
                              heads=list(heads) if heads is not None else None, max_tokens=max_tokens,
                              truncate=truncate, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                              shard_size=shard_size, block_elements=block_elements, text_field=text_field,
                              id_field=id_field, format=format, statistics=list(head_stats))
    result = CorpusResult(out=out_p, aggregates=agg_p, errors=err_p)
    if engine == "local":
        computer = settings.computer(model if not isinstance(model, str) else None)
        sel_layers, sel_heads = computer.layers, computer.heads
    else:
        if not isinstance(model, str):
            raise InputError("engine='ray' loads the model on every worker: pass a model name or a local path")
        from .ray_engine import RayPool

        pool = RayPool(settings, address=address, num_workers=num_workers)
        sel_layers, sel_heads = pool.selection()
    parts.open(_manifest(settings, source, model_name, sel_layers, sel_heads))
    done = set(parts.done_shards())
    total = count_records(source, format) if progress else None
    bar = _Progress(progress, total, f"corpus ({engine})")
    records = read_records(source, format, text_field, id_field)
    try:
        if engine == "local":
            for index, shard in shards_of(records, shard_size):
                result.n_rows += len(shard)
                if index in done:
                    result.shards_resumed += 1
                    bar.skip(len(shard))
                    continue
                table, errs, tokens = process_shard(computer, shard, batch_size, max_batch_tokens, bar.advance)
                parts.write_shard(index, table, errs)
                result.shards_computed += 1
                result.tokens += tokens
        else:
            stats = pool.run(shards_of(records, shard_size), done, parts, bar)
            result.n_rows, result.shards_computed, result.shards_resumed, result.tokens = stats
    finally:
        bar.close()
        if engine == "ray":
            pool.shutdown()
    _finalize(parts, out_p, agg_p, err_p, quantiles, result, head_stats)
    if not keep_parts:
        parts.remove()
    result.seconds = time.perf_counter() - t0
    return result


def _finalize(parts: PartsDir, out_p: Path, agg_p: Path, err_p: Path, quantiles, result: CorpusResult,
              statistics: Sequence[str]) -> None:
    """Merge the shards in input order into the three outputs (each atomically)."""
    indices = parts.done_shards()
    schema = stats_schema(statistics)
    with atomic_path(out_p) as tmp:
        with pq.ParquetWriter(tmp, schema) as w:
            for i in indices:
                t = pq.read_table(parts.shard_path(i), schema=schema)
                result.n_texts += t.num_rows
                w.write_table(t)
    table = pq.read_table(out_p, columns=["layer", "head", *statistics])
    nlh = len(np.unique(np.stack([table.column("layer").to_numpy(), table.column("head").to_numpy()], 1), axis=0)) \
        if table.num_rows else 1
    result.n_texts //= max(nlh, 1)
    with atomic_path(agg_p) as tmp:
        pq.write_table(aggregate(table, quantiles), tmp)
    del table
    with atomic_path(err_p) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for i in indices:
                for e in parts.read_errors(i):
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
                    result.n_errors += 1


# ---------------------------------------------------------------------------- streaming
def stream_corpus(model: LoadedModel | str, stream: BinaryIO, out: TextIO, *, layers=None, heads=None,
                  max_tokens: int | None = None, truncate: bool = False, format: str = "txt",
                  text_field: str = "text", id_field: str | None = None, errors_out: TextIO | None = None,
                  block_elements: int = DEFAULT_BLOCK_ELEMENTS, statistics=None) -> tuple[int, int]:
    """Read texts line by line from ``stream`` and write one JSON line per text to ``out`` as each completes.

    A result line: ``{"row", "id", "n_tokens", "layers", "heads", "stats": {name: [[per head] per layer]}}``;
    a bad row gives ``{"row", "id", "error"}`` (to ``out``, and also to ``errors_out`` if given). Each line is
    flushed at once. Returns (texts, errors).
    """
    computer = HeadStatsComputer(model, layers=layers, heads=heads, max_tokens=max_tokens, truncate=truncate,
                                 block_elements=block_elements, statistics=statistics)
    n_ok = n_err = 0
    for r in read_stream(stream, format, text_field, id_field):
        err = r.error
        if err is None:
            try:
                enc = computer.encode(r.row, r.text)  # type: ignore[arg-type]
            except InputError as e:
                err = str(e)
        if err is not None:
            line = json.dumps({"row": r.row, "id": r.id, "error": err}, ensure_ascii=False)
            n_err += 1
            if errors_out is not None:
                errors_out.write(line + "\n")
                errors_out.flush()
        else:
            v = computer.compute([enc])[0]  # (layers, heads, stats)
            line = json.dumps({"row": r.row, "id": r.id, "n_tokens": enc.n_tokens, "layers": computer.layers,
                               "heads": computer.heads,
                               "stats": {s: np.round(v[:, :, i].astype(np.float64), 7).tolist()
                                         for i, s in enumerate(computer.statistics)}}, ensure_ascii=False)
            n_ok += 1
        out.write(line + "\n")
        out.flush()
    return n_ok, n_err
