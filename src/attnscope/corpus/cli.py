"""`attnscope corpus`: per-text per-head attention statistics of a corpus (see docs/corpus.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..commands import THREADS_HELP, DeviceOption, DtypeOption, check_out, set_placement, set_threads
from ..commands import parse_indices as _indices
from ..errors import InputError


def corpus(
    input: str = typer.Argument(..., help="Corpus file (.txt one text a line, .jsonl, .csv, .parquet) or '-' for stdin."),
    model: str = typer.Option("minilm", "--model", "-m", help="Catalogue name, local path or hub id."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Per-text per-head statistics (Parquet). "
                                       "Without it, '-' streams JSON lines to stdout."),
    aggregates: Optional[Path] = typer.Option(None, help="Per-head corpus aggregates (default <out>.heads.parquet)."),
    errors: Optional[Path] = typer.Option(None, help="Rejected rows with reasons (default <out>.errors.jsonl)."),
    layers: Optional[str] = typer.Option(None, help="Layers, e.g. '0,2-4' (default all)."),
    heads: Optional[str] = typer.Option(None, help="Heads, e.g. '0-3' (default all)."),
    statistics: Optional[str] = typer.Option(None, help="Head statistics, e.g. 'entropy,max' or 'all' "
                                             "(default: all but gini, whose per-row sort is the costly one)."),
    format: Optional[str] = typer.Option(None, "--format", help="txt | jsonl | csv | parquet (default: from the suffix)."),
    text_field: str = typer.Option("text", help="JSONL field / CSV or Parquet column holding the text."),
    id_field: Optional[str] = typer.Option(None, help="Field holding a text id (default: the row number)."),
    max_tokens: Optional[int] = typer.Option(None, help="Reject texts longer than this (default: the model's limit)."),
    truncate: bool = typer.Option(False, help="Cut texts to the model's limit instead of rejecting them."),
    batch_size: int = typer.Option(32, help="Texts per batch (batches are length-bucketed)."),
    max_batch_tokens: int = typer.Option(16384, help="Padded tokens per batch at most."),
    shard_size: int = typer.Option(512, help="Rows per checkpointed shard (the unit of resuming)."),
    engine: str = typer.Option("local", help="local | ray"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address, e.g. 'auto' (engine ray)."),
    workers: Optional[int] = typer.Option(None, help="Ray actors (default: the cluster's CPUs / threads)."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP + " With Ray: threads per actor."),
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    gpus_per_worker: float = typer.Option(0, "--gpus-per-worker", help="With Ray: GPUs each actor reserves (Ray's "
                                          "num_gpus; use with --device cuda). 0: none."),
    overwrite: bool = typer.Option(False, help="Start over: discard an unfinished run's shards and replace "
                                   "a finished OUT."),
    keep_parts: bool = typer.Option(False, help="Keep the shard directory after merging."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with rate and ETA (stderr)."),
) -> None:
    """Per-text per-head attention statistics of a corpus: Parquet, resumable, local or Ray.

    Rerun the same command after an interruption to resume. `attnscope corpus - --model minilm` reads
    lines from stdin and prints one JSON line of statistics per text as each completes.
    """
    from . import run_corpus, stream_corpus  # through the package: registers every engine

    layer_list, head_list = _indices(layers, "layer"), _indices(heads, "head")
    for path, option in ((out, "--out"), (aggregates, "--aggregates"), (errors, "--errors")):
        if path is not None:
            check_out(path, option=option, kind="file")
    n_threads = set_threads(threads)
    set_placement(device, dtype)
    if out is None:
        if input != "-":
            raise InputError("pass --out stats.parquet (or read '-' from stdin to stream JSON lines to stdout)")
        err_f = open(errors, "a", encoding="utf-8") if errors else None
        try:
            n_ok, n_err = stream_corpus(model, sys.stdin.buffer, sys.stdout, layers=layer_list, heads=head_list,
                                        max_tokens=max_tokens, truncate=truncate, format=format or "txt",
                                        text_field=text_field, id_field=id_field, errors_out=err_f,
                                        statistics=statistics)
        finally:
            if err_f is not None:
                err_f.close()
        typer.echo(f"{n_ok} texts, {n_err} errors", err=True)
        return
    res = run_corpus(input, out, model, aggregates=aggregates, errors=errors, layers=layer_list, heads=head_list,
                     max_tokens=max_tokens, truncate=truncate, batch_size=batch_size,
                     max_batch_tokens=max_batch_tokens, shard_size=shard_size, text_field=text_field,
                     id_field=id_field, format=format, engine=engine, address=address, num_workers=workers,
                     progress=progress and input != "-", overwrite=overwrite, keep_parts=keep_parts,
                     statistics=statistics, threads=n_threads, gpus_per_worker=gpus_per_worker)
    resumed = f" ({res.shards_resumed} shards resumed)" if res.shards_resumed else ""
    if res.n_duplicates:
        more = ", …" if res.n_duplicates > 5 else ""
        resumed += (f"\n  {res.n_duplicates} rows skipped for a duplicate id (in the errors file): "
                    f"{', '.join(map(repr, res.duplicate_ids[:5]))}{more}")
    typer.echo(f"{res.n_texts} texts, {res.n_errors} errors in {res.seconds:.1f} s{resumed}\n"
               f"  statistics: {res.out}\n  aggregates: {res.aggregates}\n  errors:     {res.errors}", err=True)
