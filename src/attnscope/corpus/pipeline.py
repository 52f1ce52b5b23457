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
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Protocol, Sequence, TextIO

import numpy as np
import torch

from .._optional import lazy_module, require
from ..capture.interface import DEFAULT_BLOCK_ELEMENTS
from ..devices import default_placement, resolve_dtype
from ..errors import InputError
from ..models import LoadedModel
from ..statistics import ROW_STATS
from .reader import Record, check_input, count_records, fingerprint, read_records, read_stream
from .shards import PartsDir, atomic_path, remove_stale_temps, stats_schema, stats_table
from .stats import HeadStatsComputer, head_stat_names

__all__ = ["CorpusSettings", "CorpusResult", "run_corpus", "process_shard", "aggregate", "stream_corpus",
           "default_paths", "QUANTILES", "Engine", "ENGINES", "LocalEngine", "register_engine", "check_outputs",
           "read_report"]

pa = lazy_module("pyarrow", "corpus", "a corpus run with Parquet output")
pq = lazy_module("pyarrow.parquet", "corpus", "a corpus run with Parquet output")

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
    dtype: str = "float32"  # the model's precision (bf16 statistics differ from float32 ones)

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
    threads: int = 0  # torch threads of each model (local: this process; Ray: each actor)
    n_duplicates: int = 0  # rows skipped because an earlier row has their id (also in the errors file)
    duplicate_ids: list[str] = field(default_factory=list)  # the first of them (at most 20)
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


# ---------------------------------------------------------------------------- engines
ShardResult = tuple[int, "pa.Table", list[dict[str, Any]], int]  # (shard index, table, error rows, tokens)


class Engine(Protocol):
    """What computes the shards of a run. Built before anything is loaded or written (so the constructor
    checks its arguments only); ``start`` loads the model(s), sets ``threads`` (torch threads per model)
    and returns the selected (layers, heads);
    ``run`` computes the given shards, yielding each result as it completes (in any order) and calling
    ``progress(texts, tokens)`` as work is done; ``close`` frees what ``start`` took (also after an error).
    Every engine computes a shard with :func:`process_shard`, so all give the same shards."""

    threads: int | None

    def start(self) -> tuple[list[int], list[int]]: ...

    def run(self, shards: Iterable[tuple[int, list[Record]]],
            progress: Callable[[int, int], None]) -> Iterator[ShardResult]: ...

    def close(self) -> None: ...


# name -> factory(model, settings, *, threads, address, num_workers) -> Engine; "ray" is registered by
# corpus/ray_engine.py when the package's load_engines() imports it, so this module imports no engine.
ENGINES: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str):
    """Class decorator: make an :class:`Engine` available as ``run_corpus(engine=name)``."""
    def deco(factory):
        ENGINES[name] = factory
        return factory
    return deco


@register_engine("local")
class LocalEngine:
    """Shards computed one after another in this process, with ``threads`` torch threads (default: the
    current setting; restored by ``close``)."""

    def __init__(self, model: LoadedModel | str, settings: CorpusSettings, *, threads: int | None = None,
                 address: str | None = None, num_workers: int | None = None):
        if address is not None or num_workers is not None:
            raise InputError("--address and --workers are for --engine ray")
        self.model, self.settings, self.threads = model, settings, threads
        self._previous_threads: int | None = None

    def start(self) -> tuple[list[int], list[int]]:
        if self.threads:
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self.threads = torch.get_num_threads()
        self.computer = self.settings.computer(self.model if not isinstance(self.model, str) else None)
        return self.computer.layers, self.computer.heads

    def run(self, shards, progress):
        for index, shard in shards:
            table, errs, tokens = process_shard(self.computer, shard, self.settings.batch_size,
                                                self.settings.max_batch_tokens, progress)
            yield index, table, errs, tokens

    def close(self) -> None:
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None


# ---------------------------------------------------------------------------- checks before a run
def _is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def _check_writable(target: Path, what: str) -> None:
    """``target``'s nearest existing ancestor is a directory we can create files in (probed, then removed)."""
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {what} {target}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".attnscope-probe-", dir=parent)
    except OSError as e:
        raise InputError(f"cannot write {what} {target}: {e.strerror or e} in {parent}; choose another path") from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(source: str, out_p: Path, agg_p: Path, err_p: Path, parts: PartsDir, overwrite: bool) -> None:
    """Refuse, before anything is loaded or written, outputs that a run could not write or should not replace."""
    targets = {"--out": out_p, "--aggregates": agg_p, "--errors": err_p}
    resolved = {k: p.resolve() for k, p in targets.items()}
    if len(set(resolved.values())) < 3:
        raise InputError(f"--out, --aggregates and --errors must be three different files, got {out_p}, {agg_p}, "
                         f"{err_p}")
    if source != "-" and Path(source).resolve() in resolved.values():
        raise InputError(f"the input {source} is also an output; choose another --out")
    for what, p in targets.items():
        if p.is_dir():
            raise InputError(f"{what} {p} is a directory; name a file in it, e.g. {p / 'stats.parquet'}")
        if p.exists() and not p.is_file():
            raise InputError(f"{what} {p} exists and is not a regular file; choose another path")
        if what != "--errors" and p.is_file() and not _is_parquet(p):
            raise InputError(f"{what} {p} exists and is not a Parquet file; choose another path (it is not replaced)")
        _check_writable(p, what)
    _check_writable(parts.path / "manifest.json", "the shard directory")
    if out_p.exists() and not parts.exists() and not overwrite:
        raise InputError(f"{out_p} exists (a finished run); pass --overwrite to compute it again")


# ---------------------------------------------------------------------------- duplicate ids
class _Duplicates:
    """Marks every row whose id an earlier row already has as a bad row ("duplicate id"); the first keeps it."""

    def __init__(self, keep: int = 20):
        self.first: dict[str, int] = {}
        self.count = 0
        self.ids: list[str] = []
        self.keep = keep

    def mark(self, records: Iterable[Record]) -> Iterator[Record]:
        for r in records:
            first = self.first.setdefault(r.id, r.row)
            if first == r.row:
                yield r
                continue
            self.count += 1
            if len(self.ids) < self.keep:
                self.ids.append(r.id)
            yield Record(r.row, r.id, None, f"duplicate id: row {first} has the same id; this row is skipped")


# ---------------------------------------------------------------------------- the run
MANIFEST_SCHEMA = 2


def _manifest(settings: CorpusSettings, input_fp: dict, lm_name: str, layers, heads) -> dict:
    d = asdict(settings)
    d.update(model=lm_name, layers=layers, heads=heads, input=input_fp,
             statistics=list(head_stat_names(settings.statistics)), schema=MANIFEST_SCHEMA)
    for k in ("batch_size", "max_batch_tokens", "block_elements"):  # do not change the numbers
        d.pop(k)
    return d


def run_corpus(source: str | os.PathLike, out: str | os.PathLike, model: LoadedModel | str = "minilm", *,
               aggregates: str | os.PathLike | None = None, errors: str | os.PathLike | None = None,
               layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
               max_tokens: int | None = None, truncate: bool = False, batch_size: int = 32,
               max_batch_tokens: int = 16384, shard_size: int = 512, text_field: str = "text",
               id_field: str | None = None, format: str | None = None, engine: str = "local",
               address: str | None = None, num_workers: int | None = None, threads: int | None = None,
               progress: bool = False, overwrite: bool = False, keep_parts: bool = False,
               quantiles: Sequence[float] = QUANTILES, block_elements: int = DEFAULT_BLOCK_ELEMENTS,
               statistics: Sequence[str] | str | None = None, gpus_per_worker: float = 0) -> CorpusResult:
    """Per-text per-head statistics of a corpus file (txt / jsonl / csv / parquet, or ``"-"`` for stdin).

    Resumable: rerunning the same command after a crash or kill computes only the missing shards
    (``shard_size`` rows each); an unfinished run whose settings or input file (size and content hash)
    differ is refused — ``overwrite=True`` starts over, discarding its shards and a finished output.
    Everything is checked before the model is loaded or a file is written: a refused start leaves
    nothing behind. ``engine``: ``"local"`` or ``"ray"`` (Ray actors, one model each; ``address``: a Ray
    cluster address such as ``"auto"``; ``num_workers``: actors, default the cluster's CPUs / threads).
    ``threads``: torch threads (default: the current setting), also in each Ray actor, so that both
    engines compute the same numbers. With ``id_field``, a row whose id an earlier row has is skipped and
    listed in the errors file (``CorpusResult.n_duplicates``). ``gpus_per_worker``: GPUs each Ray actor
    reserves (Ray's ``num_gpus``; 0: none); the model's device and dtype are those of
    :func:`attnscope.load_model`'s default (the CLI's ``--device`` / ``--dtype``), in every actor too. ``statistics``: the head statistics
    (default all but Gini, whose per-row sort costs more than the rest; ``"all"`` adds it). See the module
    docstring for the outputs.
    """
    require("pyarrow.parquet", "corpus", "a corpus run with Parquet output (--out)", "or stream JSON lines without --out")
    head_stats = head_stat_names(statistics)
    from . import load_engines  # the package's engines register themselves (this module imports none)

    load_engines()
    if not isinstance(engine, str) or engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    for name, v in (("batch_size", batch_size), ("shard_size", shard_size), ("max_batch_tokens", max_batch_tokens)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    for name, v in (("threads", threads), ("num_workers", num_workers)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 4096):
            raise InputError(f"{name} must be an integer from 1 to 4096, got {v!r}")
    if (isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float))
            or not 0 <= gpus_per_worker <= 64):
        raise InputError(f"gpus_per_worker must be a number from 0 to 64, got {gpus_per_worker!r}")
    if gpus_per_worker and engine != "ray":
        raise InputError("--gpus-per-worker is for --engine ray (the local engine uses --device)")
    source = str(source)
    if source == "-" and engine != "local":
        raise InputError("stdin can be read by the local engine only; write it to a file first")
    out_p, agg_p, err_p = default_paths(out, aggregates, errors)
    parts = PartsDir(out_p)
    check_outputs(source, out_p, agg_p, err_p, parts, overwrite)
    check_input(source, format, text_field, id_field)
    input_fp = fingerprint(source) if source != "-" else {"path": "-"}
    model_name = model if isinstance(model, str) else model.name
    dtype = (resolve_dtype(default_placement()[1]) if isinstance(model, str)
             else next(model.model.parameters()).dtype)  # what the model is (or will be) loaded in
    settings = CorpusSettings(dtype=str(dtype).removeprefix("torch."), model=model_name, layers=list(layers) if layers is not None else None,
                              heads=list(heads) if heads is not None else None, max_tokens=max_tokens,
                              truncate=truncate, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                              shard_size=shard_size, block_elements=block_elements, text_field=text_field,
                              id_field=id_field, format=format, statistics=list(head_stats))
    if not overwrite:  # refuse a changed input or other settings before loading the model
        parts.check(_manifest(settings, input_fp, model_name, None, None), ignore=("layers", "heads"))
    eng = ENGINES[engine](model, settings, threads=threads, address=address, num_workers=num_workers,
                          **({"gpus_per_worker": gpus_per_worker} if gpus_per_worker else {}))
    # --- nothing above writes; from here on the run owns out_p's shard directory
    for p in (out_p, agg_p, err_p):
        remove_stale_temps(p)
    parts.remove_stale_temps()
    t0 = time.perf_counter()
    result = CorpusResult(out=out_p, aggregates=agg_p, errors=err_p)
    bar = None
    try:
        sel_layers, sel_heads = eng.start()
        result.threads = eng.threads
        if overwrite:
            parts.remove()
        manifest = _manifest(settings, input_fp, model_name, sel_layers, sel_heads)
        parts.open(manifest)
        done = set(parts.done_shards())
        total = count_records(source, format) if progress else None
        bar = _Progress(progress, total, f"corpus ({engine})")
        records = read_records(source, format, text_field, id_field)
        duplicates = _Duplicates()
        if id_field:
            records = duplicates.mark(records)

        def pending_shards() -> Iterator[tuple[int, list[Record]]]:
            for index, shard in shards_of(records, shard_size):
                result.n_rows += len(shard)
                if index in done:
                    result.shards_resumed += 1
                    bar.skip(len(shard))
                else:
                    yield index, shard

        for index, table, errs, tokens in eng.run(pending_shards(), bar.advance):
            parts.write_shard(index, table, errs)
            result.shards_computed += 1
            result.tokens += tokens
    finally:
        if bar is not None:
            bar.close()
        eng.close()
    if source != "-":
        st = os.stat(source)
        if (st.st_size, st.st_mtime_ns) != (input_fp["size"], input_fp["mtime_ns"]):
            raise InputError(f"the input {source} changed while it was being read; pass --overwrite to start over")
    result.n_duplicates, result.duplicate_ids = duplicates.count, duplicates.ids
    report = {"input": input_fp, "settings": manifest, "engine": engine, "threads": result.threads,
              "n_rows": result.n_rows,
              "n_duplicates": result.n_duplicates, "duplicate_ids": result.duplicate_ids}
    _finalize(parts, out_p, agg_p, err_p, quantiles, result, head_stats, len(sel_layers) * len(sel_heads), report)
    if not keep_parts:
        parts.remove()
    result.seconds = time.perf_counter() - t0
    return result


REPORT_KEY = b"attnscope.corpus"  # Parquet key-value metadata of the statistics file: the run's report (JSON)


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    """The report :func:`run_corpus` stores in its statistics file: input fingerprint, settings, ``n_rows``,
    ``n_texts``, ``n_errors``, ``n_duplicates`` and the first ``duplicate_ids``."""
    meta = pq.ParquetFile(path).schema_arrow.metadata or {}
    if REPORT_KEY not in meta:
        raise InputError(f"{path} has no attnscope corpus report (not written by attnscope corpus)")
    return json.loads(meta[REPORT_KEY])


def _finalize(parts: PartsDir, out_p: Path, agg_p: Path, err_p: Path, quantiles, result: CorpusResult,
              statistics: Sequence[str], per_text: int, report: dict[str, Any]) -> None:
    """Merge the shards in input order into the three outputs (each atomically); the statistics file
    carries ``report`` (and the counts) as Parquet metadata."""
    indices = parts.done_shards()
    with atomic_path(err_p) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for i in indices:
                for e in parts.read_errors(i):
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
                    result.n_errors += 1
    result.n_texts = sum(pq.ParquetFile(parts.shard_path(i)).metadata.num_rows for i in indices) // max(per_text, 1)
    report = dict(report, n_texts=result.n_texts, n_errors=result.n_errors)
    schema = stats_schema(statistics)
    with atomic_path(out_p) as tmp:
        with pq.ParquetWriter(tmp, schema.with_metadata({REPORT_KEY: json.dumps(report).encode()})) as w:
            for i in indices:
                w.write_table(pq.read_table(parts.shard_path(i), schema=schema))
    table = pq.read_table(out_p, columns=["layer", "head", *statistics])
    with atomic_path(agg_p) as tmp:
        pq.write_table(aggregate(table, quantiles), tmp)


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
