"""Checkpointed shards and atomic files: what makes a corpus run resumable.

The input is cut into shards of ``shard_size`` consecutive rows. A finished shard is two files in the
parts directory (``<out>.parts/``): ``shard-NNNNNN.errors.jsonl`` and then ``shard-NNNNNN.parquet``,
each written to a temporary file and moved into place with ``os.replace`` — so a shard's Parquet file
exists only when the shard is complete, and a run killed at any point leaves only whole shards. A
restarted run skips them, computes the rest, then merges all shards in input order into the outputs
(each again written atomically) and removes the parts directory. ``manifest.json`` records the
settings and a fingerprint of the input (size, modification time, BLAKE2b hash of its bytes); resuming
with other settings or a changed input is refused. A temporary file left by a kill (``.<name>.*.tmp``
beside an output or in the parts directory) is removed by the next run.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from .._optional import lazy_module
from ..errors import InputError
from .stats import HEAD_STATS

pa = lazy_module("pyarrow", "corpus", "corpus shards (Parquet)")
pq = lazy_module("pyarrow.parquet", "corpus", "corpus shards (Parquet)")

__all__ = ["atomic_path", "write_bytes_atomic", "stats_schema", "stats_table", "PartsDir", "remove_stale_temps",
           "file_mode"]


def file_mode() -> int:
    """The mode a new file gets under the process umask (0o666 & ~umask): mkstemp's files are 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target``; on success it is fsync'ed and ``os.replace``d onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` leaves beside ``target`` when killed; returns them."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    prefix = _temp_prefix(target)
    stale = [p for p in target.parent.iterdir()
             if p.name.startswith(prefix) and p.name.endswith(".tmp") and p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def check(self, manifest: dict[str, Any], ignore: Sequence[str] = ()) -> bool:
        """Whether an unfinished run can be resumed (True) or there is none (False); an InputError if its
        settings (but the keys in ``ignore``) or its input differ from ``manifest``. Writes nothing.

        The input is the same if its size and content hash are: a file rewritten with the same bytes (a new
        modification time only) is resumed.
        """
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path} exists and is not a directory; move it away (it is where the shards "
                             "of a run go)")
        if not self.manifest_path.is_file():
            return False
        try:
            old = json.loads(self.manifest_path.read_text("utf-8"))
        except (OSError, ValueError):
            old = {}
        start_over = f"rerun with --overwrite to start over (its shards are discarded), or delete {self.path}"
        if not isinstance(old, dict) or old.get("schema") != manifest.get("schema"):
            raise InputError(f"{self.path} holds shards of an unfinished run written by another version; {start_over}")
        keys = (set(old) | set(manifest)) - set(ignore) - {"input"}
        diff = sorted(k for k in keys if old.get(k) != manifest.get(k))
        if diff:
            raise InputError(f"{self.path} holds shards of an unfinished run with different settings "
                             f"({', '.join(diff)}); rerun with the same settings to resume, or {start_over}")
        a, b = old.get("input") or {}, manifest.get("input") or {}
        if a.get("path") == "-" or b.get("path") == "-":
            raise InputError(f"{self.path} holds shards of an unfinished run that read stdin, which cannot be "
                             f"read again; {start_over}")
        if (a.get("path"), a.get("size"), a.get("blake2b")) != (b.get("path"), b.get("size"), b.get("blake2b")):
            what = "is another file" if a.get("path") != b.get("path") else "changed"
            raise InputError(f"the input {b.get('path')} {what} since the unfinished run in {self.path} began "
                             f"(its shards would mix two inputs); {start_over}")
        return True

    def open(self, manifest: dict[str, Any]) -> bool:
        """Create the directory and manifest, or check that an existing one matches (see :meth:`check`).
        Returns whether a run is resumed."""
        if self.check(manifest):
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
        return False

    def remove_stale_temps(self) -> list[Path]:
        """Delete temporary files a killed run left in the directory (they never count as shards)."""
        if not self.exists():
            return []
        stale = [p for p in self.path.glob(".*.tmp") if p.is_file() and not p.is_symlink()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

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
