"""Reading a corpus: one record per text from .txt / .jsonl / .csv / .parquet files or stdin.

Every input row becomes a :class:`Record` — bad rows too: a row that is empty, not valid UTF-8, not
valid JSON, or lacks the text field carries ``error`` (the reason) instead of being dropped, so the
pipeline can write it to the errors file. ``row`` is the 0-based position of the row in the input
(the header of a CSV file is not a row); ``id`` is the id field's value if one is named, else ``row``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Literal, get_args

from .._optional import require
from ..errors import InputError

Format = Literal["txt", "jsonl", "csv", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)
_SUFFIXES = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
             ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}

__all__ = ["Record", "FORMATS", "detect_format", "read_records", "read_stream", "count_records", "check_input",
           "fingerprint"]

PREVIEW_ROWS = 100  # rows check_input reads before a run creates anything


@dataclass(frozen=True)
class Record:
    """One input row: its position, id, text (None when unreadable) and, for a bad row, the reason."""

    row: int
    id: str
    text: str | None
    error: str | None = None


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """The format named by ``fmt`` or by the file's suffix; an InputError lists the valid ones."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputError(f"unknown corpus format {fmt!r}; valid formats: {', '.join(FORMATS)}")
        return fmt
    if str(path) == "-":
        return "txt"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(f"cannot tell the format of {path} from its suffix {suffix!r}; pass --format "
                         f"({', '.join(FORMATS)})")
    return _SUFFIXES[suffix]


def _check(text: str | None, row: int, ident: str) -> Record:
    if text is None:
        return Record(row, ident, None, "no text (null value)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: bytes that were not UTF-8 (surrogateescape)
        return Record(row, ident, None, f"undecodable: not valid UTF-8 near character {e.start}")
    if not text.strip():
        return Record(row, ident, None, "empty or whitespace-only text")
    return Record(row, ident, text)


def _decode_line(raw: bytes, row: int) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"undecodable: not valid UTF-8 (byte {e.start}: {e.reason})"


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    for raw in stream:
        yield raw.rstrip(b"\r\n")


def _txt(stream: BinaryIO) -> Iterator[Record]:
    for row, raw in enumerate(_lines(stream)):
        text, err = _decode_line(raw, row)
        yield Record(row, str(row), None, err) if err else _check(text, row, str(row))


def _jsonl(stream: BinaryIO, text_field: str, id_field: str | None) -> Iterator[Record]:
    for row, raw in enumerate(_lines(stream)):
        line, err = _decode_line(raw, row)
        if err:
            yield Record(row, str(row), None, err)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield Record(row, str(row), None, f"invalid JSON: {e.msg} at column {e.colno}")
            continue
        if not isinstance(obj, dict):
            yield Record(row, str(row), None, "invalid JSON row: expected an object like {\"text\": …}")
            continue
        ident = str(obj[id_field]) if id_field and obj.get(id_field) is not None else str(row)
        if text_field not in obj:
            yield Record(row, ident, None, f"no field {text_field!r} (fields: {', '.join(map(str, obj))})")
            continue
        value = obj[text_field]
        if value is not None and not isinstance(value, str):
            yield Record(row, ident, None, f"field {text_field!r} is a {type(value).__name__}, not text")
            continue
        yield _check(value, row, ident)


def _csv(stream: BinaryIO, text_field: str, id_field: str | None, delimiter: str) -> Iterator[Record]:
    # surrogateescape keeps undecodable bytes as lone surrogates so one bad row does not stop the file
    wrapper = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.DictReader(wrapper, delimiter=delimiter)
    if reader.fieldnames is None:
        return
    if text_field not in reader.fieldnames:
        raise InputError(f"the CSV file has no column {text_field!r} (columns: {', '.join(reader.fieldnames)}); "
                         "pass --text-field")
    for row, obj in enumerate(reader):
        ident = obj.get(id_field) if id_field else None
        yield _check(obj.get(text_field), row, str(ident) if ident not in (None, "") else str(row))


def _parquet(path: Path, text_field: str, id_field: str | None) -> Iterator[Record]:
    pq = require("pyarrow.parquet", "corpus", "reading a Parquet corpus")

    f = pq.ParquetFile(path)
    names = f.schema_arrow.names
    if text_field not in names:
        raise InputError(f"{path} has no column {text_field!r} (columns: {', '.join(names)}); pass --text-field")
    columns = [text_field] + ([id_field] if id_field and id_field in names else [])
    row = 0
    for batch in f.iter_batches(batch_size=4096, columns=columns):
        texts = batch.column(0)
        ids = batch.column(1).to_pylist() if len(columns) > 1 else None
        for i in range(batch.num_rows):
            ident = str(ids[i]) if ids is not None and ids[i] is not None else str(row)
            value = texts[i].as_py()
            if isinstance(value, bytes):
                value, err = _decode_line(value, row)
                if err:
                    yield Record(row, ident, None, err)
                    row += 1
                    continue
            if value is not None and not isinstance(value, str):
                yield Record(row, ident, None, f"column {text_field!r} holds {type(value).__name__}, not text")
            else:
                yield _check(value, row, ident)
            row += 1


def read_stream(stream: BinaryIO, fmt: str = "txt", text_field: str = "text", id_field: str | None = None,
                delimiter: str = ",") -> Iterator[Record]:
    """Records from a binary stream (stdin: ``sys.stdin.buffer``), one per line (txt/jsonl) or CSV row."""
    if fmt == "txt":
        return _txt(stream)
    if fmt == "jsonl":
        return _jsonl(stream, text_field, id_field)
    if fmt == "csv":
        return _csv(stream, text_field, id_field, delimiter)
    raise InputError(f"format {fmt!r} cannot be streamed; stream txt, jsonl or csv")


def read_records(path: str | Path, fmt: str | None = None, text_field: str = "text", id_field: str | None = None,
                 delimiter: str | None = None) -> Iterator[Record]:
    """Records of a corpus file (``"-"`` reads stdin). See the module docstring."""
    fmt = detect_format(path, fmt)
    if delimiter is None:
        delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
    if str(path) == "-":
        yield from read_stream(sys.stdin.buffer, fmt, text_field, id_field, delimiter)
        return
    p = Path(path)
    if not p.is_file():
        raise InputError(f"corpus file not found: {p}")
    if fmt == "parquet":
        yield from _parquet(p, text_field, id_field)
        return
    with open(p, "rb") as f:
        yield from read_stream(f, fmt, text_field, id_field, delimiter)


def count_records(path: str | Path, fmt: str | None = None, delimiter: str | None = None) -> int | None:
    """How many records ``read_records`` will yield (for the progress bar); None for stdin."""
    if str(path) == "-":
        return None
    fmt = detect_format(path, fmt)
    p = Path(path)
    if fmt == "parquet":
        pq = require("pyarrow.parquet", "corpus", "reading a Parquet corpus")

        return pq.ParquetFile(p).metadata.num_rows
    if fmt == "csv":
        return sum(1 for _ in read_records(p, fmt, delimiter=delimiter, text_field=_first_csv_column(p, delimiter)))
    n = 0
    with open(p, "rb") as f:
        for _ in f:
            n += 1
    return n


def _first_csv_column(p: Path, delimiter: str | None) -> str:
    with open(p, encoding="utf-8", errors="surrogateescape", newline="") as f:
        header = next(csv.reader(f, delimiter=delimiter or ","), [""])
    return header[0] if header else ""


def _open_error(p: Path, e: OSError) -> InputError:
    return InputError(f"cannot read the corpus file {p}: {e.strerror or e}")


def check_input(path: str | Path, fmt: str | None = None, text_field: str = "text", id_field: str | None = None,
                rows: int = PREVIEW_ROWS) -> str:
    """Check a corpus file before a run creates anything; returns its format.

    The file must exist, be readable and be of a known format; a CSV or Parquet file must have the text
    column (and the id column, if one is named); and its first ``rows`` rows must not all be bad (which
    means a wrong ``--format`` or ``--text-field``, not a few bad rows). In a JSON-lines file at least one
    of those rows must have the id field, if one is named. ``"-"`` (stdin) cannot be read twice: only
    the format is checked.
    """
    if str(path) == "-":
        return detect_format(path, fmt)
    p = Path(path)
    if not p.exists():
        raise InputError(f"corpus file not found: {p}")
    if not p.is_file():
        raise InputError(f"{p} is not a file; pass a corpus file (.txt, .jsonl, .csv, .parquet)")
    fmt = detect_format(path, fmt)
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise _open_error(p, e) from None
    if fmt == "parquet":
        pa = require("pyarrow", "corpus", "reading a Parquet corpus")
        pq = require("pyarrow.parquet", "corpus", "reading a Parquet corpus")
        try:
            names = pq.ParquetFile(p).schema_arrow.names
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{p} is not a readable Parquet file ({type(e).__name__}); pass --format if it is "
                             "another format") from None
        if id_field and id_field not in names:
            raise InputError(f"{p} has no column {id_field!r} (columns: {', '.join(names)}); pass --id-field")
    elif fmt == "csv":
        delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
        with open(p, encoding="utf-8", errors="surrogateescape", newline="") as f:
            header = next(csv.reader(f, delimiter=delimiter), [])
        if id_field and header and id_field not in header:
            raise InputError(f"the CSV file has no column {id_field!r} (columns: {', '.join(header)}); "
                             "pass --id-field")
    elif fmt == "jsonl" and id_field:
        objects = []
        with open(p, "rb") as f:
            for _, raw in zip(range(rows), f):
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    objects.append(obj)
        if objects and not any(id_field in o for o in objects):
            raise InputError(f"none of the first {len(objects)} rows of {p} has the id field {id_field!r} "
                             f"(fields: {', '.join(map(str, objects[0]))}); pass --id-field")
    try:
        first = [r for _, r in zip(range(rows), read_records(p, fmt, text_field, id_field))]
    except csv.Error as e:
        raise InputError(f"{p} is not readable as CSV ({e}); pass --format if it is another format") from None
    if first and all(r.error is not None for r in first):
        raise InputError(f"the first {len(first)} rows of {p} are all rejected (row 0: {first[0].error}); "
                         "check --format and --text-field")
    return fmt


def fingerprint(path: str | Path, chunk: int = 1 << 20) -> dict:
    """Size, modification time and BLAKE2b hash of a file's bytes, read in 1 MiB chunks: what a resumed run
    compares to know that its input has not changed."""
    p = Path(path)
    h = hashlib.blake2b(digest_size=32)
    try:
        st = os.stat(p)
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as e:
        raise _open_error(p, e) from None
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b": h.hexdigest()}
