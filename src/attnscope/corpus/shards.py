"""Checkpointed shards and atomic files: what makes a corpus run resumable.

The input is cut into shards of ``shard_size`` consecutive rows. A finished shard is two files in the
parts directory (``<out>.parts/``): ``shard-NNNNNN.errors.jsonl`` and then ``shard-NNNNNN.parquet``,
each written to a temporary file and moved into place with ``os.replace`` — so a shard's Parquet file
exists only when the shard is complete, and a run killed at any point leaves only whole shards. A
restarted run skips them, computes the rest, then merges all shards in input order into the outputs
(each again written atomically) and removes the parts directory. ``manifest.json`` records the
settings; resuming with different ones is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .stats import HEAD_STATS

__all__ = ["atomic_path", "write_bytes_atomic", "stats_schema", "stats_table", "PartsDir"]


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target``; on success it is fsync'ed and ``os.replace``d onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def stats_schema(statistics: Sequence[str] = HEAD_STATS) -> pa.Schema:
    """Columns of the per-text per-head table: ids, sizes, layer, head, then one column per statistic."""
    return pa.schema([("text_id", pa.string()), ("row", pa.int64()), ("n_tokens", pa.int32()),
                      ("original_tokens", pa.int32()), ("layer", pa.int16()), ("head", pa.int16())]
                     + [(s, pa.float32()) for s in statistics])


def stats_table(rows: list[int], ids: list[str], n_tokens: list[int], original: list[int], layers: list[int],
                heads: list[int], values: np.ndarray, statistics: Sequence[str] = HEAD_STATS) -> pa.Table:
    """Long table: one row per (text, layer, head) from values (texts, layers, heads, stats), texts in given order."""
    t, nl, nh, _ = values.shape if values.size else (len(rows), len(layers), len(heads), len(statistics))
    per = nl * nh
    cols: dict[str, Any] = {
        "text_id": pa.array(np.repeat(np.asarray(ids, dtype=object), per) if t else [], pa.string()),
        "row": pa.array(np.repeat(np.asarray(rows, dtype=np.int64), per), pa.int64()),
        "n_tokens": pa.array(np.repeat(np.asarray(n_tokens, dtype=np.int32), per), pa.int32()),
        "original_tokens": pa.array(np.repeat(np.asarray(original, dtype=np.int32), per), pa.int32()),
        "layer": pa.array(np.tile(np.repeat(np.asarray(layers, dtype=np.int16), nh), t), pa.int16()),
        "head": pa.array(np.tile(np.asarray(heads, dtype=np.int16), nl * t), pa.int16()),
    }
    flat = values.reshape(t * per, len(statistics)) if t else np.zeros((0, len(statistics)), np.float32)
    for si, s in enumerate(statistics):
        cols[s] = pa.array(np.ascontiguousarray(flat[:, si]), pa.float32())
    return pa.table(cols, schema=stats_schema(statistics))


class PartsDir:
    """The parts directory of one output: shard files and the manifest."""

    def __init__(self, out: str | os.PathLike):
        out = Path(out)
        self.path = out.with_name(out.name + ".parts")

    def exists(self) -> bool:
        return self.path.is_dir()

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:06d}.parquet"

    def errors_path(self, index: int) -> Path:
        return self.path / f"shard-{index:06d}.errors.jsonl"

    def done(self, index: int) -> bool:
        return self.shard_path(index).is_file()

    def done_shards(self) -> list[int]:
        if not self.exists():
            return []
        return sorted(int(p.name[6:12]) for p in self.path.glob("shard-*.parquet"))

    def open(self, manifest: dict[str, Any]) -> None:
        """Create the directory or check that an existing one was made with the same settings."""
        mpath = self.path / "manifest.json"
        if mpath.is_file():
            old = json.loads(mpath.read_text())
            if old != manifest:
                diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
                raise InputError(
                    f"{self.path} holds shards of an unfinished run with different settings ({', '.join(diff)}); "
                    "rerun with the same settings to resume, or delete that directory to start over"
                )
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(mpath, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def write_shard(self, index: int, table: pa.Table, errors: list[dict[str, Any]]) -> None:
        """Errors first, then the table: the table's presence marks the shard as complete."""
        write_bytes_atomic(self.errors_path(index),
                           "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors).encode("utf-8"))
        with atomic_path(self.shard_path(index)) as tmp:
            pq.write_table(table, tmp)

    def read_errors(self, index: int) -> list[dict[str, Any]]:
        p = self.errors_path(index)
        return [json.loads(line) for line in p.read_text("utf-8").splitlines() if line] if p.is_file() else []

    def remove(self) -> None:
        """Delete shard files, then the manifest, then the directory (a kill midway still resumes)."""
        if not self.exists():
            return
        for p in sorted(self.path.glob("shard-*")):
            p.unlink(missing_ok=True)
        for p in self.path.iterdir():
            if p.name != "manifest.json":
                p.unlink(missing_ok=True)
        (self.path / "manifest.json").unlink(missing_ok=True)
        self.path.rmdir()
