import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from attnscope.corpus.pipeline import aggregate, run_corpus, stream_corpus
from attnscope.corpus.reader import count_records, read_records
from attnscope.corpus.shards import PartsDir
from attnscope.corpus.stats import HEAD_STATS, plan_batches
from attnscope.errors import InputError

from _helpers import COUNT_STATS, head_count_bounds

TEXTS = [
    "The cat sat on the mat.",
    "Attention heads look at different tokens.",
    "Short.",
    "A considerably longer sentence, with commas, clauses and several more words than the others have.",
    "Paris is the capital of France.",
    "Hello world",
    "Transformers compute softmax over keys for every query.",
    "Why?",
    "Numbers like 3.14 and 42 are tokens too.",
    "The last text of the little corpus.",
]


# ---------------------------------------------------------------------------- readers (no model)
def test_readers_keep_bad_rows_with_reasons(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_bytes(b"good one\n   \nbad \xff byte\nlast\n")
    recs = list(read_records(txt))
    assert [r.row for r in recs] == [0, 1, 2, 3]
    assert [r.error is None for r in recs] == [True, False, False, True]
    assert "empty" in recs[1].error and "UTF-8" in recs[2].error
    assert count_records(txt) == 4

    jl = tmp_path / "a.jsonl"
    jl.write_bytes(b'{"text": "x y", "id": "A"}\n{"text": 3}\n{nope\n{"body": "z"}\n{"text": null, "id": 7}\n')
    recs = list(read_records(jl, id_field="id"))
    assert recs[0].id == "A" and recs[0].text == "x y"
    assert "not text" in recs[1].error and "invalid JSON" in recs[2].error
    assert "no field 'text'" in recs[3].error and recs[4].id == "7" and recs[4].error

    csvf = tmp_path / "a.csv"
    csvf.write_bytes(b'id,text\nk1,"multi\nline, text"\nk2,\nk3,caf\xe9\n')
    recs = list(read_records(csvf, id_field="id"))
    assert recs[0].text == "multi\nline, text" and recs[0].id == "k1"
    assert "empty" in recs[1].error and "UTF-8" in recs[2].error
    with pytest.raises(InputError, match="no column 'body'"):
        list(read_records(csvf, text_field="body"))

    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["one", "", None], "k": [1, 2, 3]}), pqf)
    recs = list(read_records(pqf, id_field="k"))
    assert [r.id for r in recs] == ["1", "2", "3"] and recs[0].text == "one"
    assert recs[1].error and recs[2].error and count_records(pqf) == 3
    with pytest.raises(InputError, match="format"):
        list(read_records(tmp_path / "x.docx"))


def test_plan_batches_bounds_and_covers():
    lengths = [5, 100, 7, 60, 3, 3, 90]
    batches = plan_batches(lengths, batch_size=3, max_batch_tokens=200)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 200)
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)


def test_aggregate_matches_numpy():
    rng = np.random.default_rng(0)
    n = 50
    cols = {"layer": np.repeat([0, 1], n).astype(np.int16), "head": np.zeros(2 * n, np.int16)}
    for s in HEAD_STATS + ("gini",):
        cols[s] = rng.random(2 * n).astype(np.float32)
    agg = aggregate(pa.table(cols)).to_pylist()
    assert {r["statistic"] for r in agg} == set(HEAD_STATS) | {"gini"}  # every statistic column it has
    row = next(r for r in agg if r["layer"] == 1 and r["statistic"] == "gini")
    x = cols["gini"][n:].astype(np.float64)
    assert row["n_texts"] == n and row["mean"] == pytest.approx(x.mean()) and row["q50"] == pytest.approx(np.median(x))
    assert row["q95"] == pytest.approx(np.quantile(x, 0.95)) and row["max"] == pytest.approx(x.max())


# ---------------------------------------------------------------------------- the pipeline (MiniLM)
def _corpus(tmp_path) -> Path:
    p = tmp_path / "c.jsonl"
    lines = [json.dumps({"text": t, "id": f"t{i}"}) for i, t in enumerate(TEXTS)]
    lines.insert(3, json.dumps({"text": "  ", "id": "blank"}))
    lines.insert(6, json.dumps({"text": "word " * 700, "id": "huge"}))
    p.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "\xff\xfe"}\n')
    return p


@pytest.mark.slow
def test_run_corpus_rows_parity_errors_aggregates(minilm, tmp_path):
    from attnscope.capture import capture

    src = _corpus(tmp_path)
    res = run_corpus(src, tmp_path / "s.parquet", minilm, layers=[0, 5], heads=[0, 3, 11], shard_size=4,
                     batch_size=4, id_field="id")
    t = pq.read_table(res.out)
    assert res.n_texts == len(TEXTS) and res.n_errors == 3 and res.n_rows == len(TEXTS) + 3
    assert t.num_rows == len(TEXTS) * 2 * 3
    ids = t.column("text_id").to_pylist()
    assert ids[::6] == [f"t{i}" for i in range(len(TEXTS))]  # input order, each text once
    rows = t.column("row").to_numpy()
    assert np.all(np.diff(rows) >= 0)
    errs = [json.loads(line) for line in res.errors.read_text().splitlines()]
    assert {e["id"] for e in errs} == {"blank", "huge", "12"}
    assert any("over-long" in e["error"] for e in errs) and any("UTF-8" in e["error"] for e in errs)
    # each text equals the one-by-one capture's head_stats()
    for i in (0, 3, 7):
        hs = capture(minilm, TEXTS[i], mode="stats", layers=[0, 5], heads=[0, 3, 11]).head_stats()
        maps = capture(minilm, TEXTS[i], mode="full", method="eager", layers=[0, 5], heads=[0, 3, 11],
                       full_dtype=torch.float32)
        sub = t.filter(pa.compute.equal(t.column("text_id"), f"t{i}"))
        for s in HEAD_STATS:
            if s in COUNT_STATS:  # a weight within rounding of the threshold may count either way
                lo, hi = head_count_bounds(s, maps)
                got = sub.column(s).to_numpy()
                assert np.all(got >= lo.reshape(-1) - 1e-6) and np.all(got <= hi.reshape(-1) + 1e-6), s
            else:
                np.testing.assert_allclose(sub.column(s).to_numpy(), hs[s].reshape(-1).numpy(), rtol=1e-5, atol=1e-5)
    agg = pq.read_table(res.aggregates)
    assert agg.num_rows == 2 * 3 * len(HEAD_STATS) and set(agg.column("n_texts").to_pylist()) == {len(TEXTS)}
    assert not PartsDir(res.out).exists()
    with pytest.raises(InputError, match="overwrite"):
        run_corpus(src, res.out, minilm, layers=[0])
    # the token limit is a user option too
    res2 = run_corpus(src, tmp_path / "t.parquet", minilm, layers=[0], heads=[0], max_tokens=8, id_field="id")
    errs2 = [json.loads(line) for line in res2.errors.read_text().splitlines()]
    assert res2.n_texts + res2.n_errors == res2.n_rows and any("limit of 8" in e["error"] for e in errs2)


_KILL_SCRIPT = r"""
import sys, time
from attnscope.corpus import pipeline, stats
orig = stats.HeadStatsComputer.compute
def slow(self, items):
    time.sleep(0.3)
    return orig(self, items)
stats.HeadStatsComputer.compute = slow
pipeline.run_corpus(sys.argv[1], sys.argv[2], "minilm", layers=[0, 1], heads=[0, 1], shard_size=2, batch_size=2)
"""


def test_statistics_choice_adds_gini_and_rejects_unknown_names(minilm, tmp_path):
    from attnscope.capture import capture

    src = tmp_path / "c.txt"
    src.write_text("\n".join(TEXTS[:3]) + "\n")
    res = run_corpus(src, tmp_path / "g.parquet", minilm, layers=[1], statistics="all")
    t = pq.read_table(res.out)
    assert "gini" in t.column_names and "argmax" not in t.column_names
    hs = capture(minilm, TEXTS[1], mode="stats", layers=[1], statistics="all").head_stats()
    np.testing.assert_allclose(t.column("gini").to_numpy()[12:24], hs["gini"].reshape(-1).numpy(), rtol=1e-5,
                               atol=1e-5)
    assert "gini" in set(pq.read_table(res.aggregates).column("statistic").to_pylist())
    with pytest.raises(InputError, match="unknown statistic 'ginny'"):
        run_corpus(src, tmp_path / "bad.parquet", minilm, statistics="entropy,ginny")
    assert not (tmp_path / "bad.parquet").exists() and not PartsDir(tmp_path / "bad.parquet").exists()


@pytest.mark.slow
def test_resume_after_sigkill_every_row_exactly_once(minilm, tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(TEXTS * 2) + "\n")  # 20 rows, 10 shards
    out = tmp_path / "k.parquet"
    parts = PartsDir(out)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(src), str(out)], env=dict(os.environ))
    deadline = time.time() + 120
    while time.time() < deadline and len(parts.done_shards()) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = parts.done_shards()
    assert 3 <= len(done_before) < 10 and not out.exists()
    # a half-written temp file (a kill during a write) must not count
    (parts.path / ".shard-000009.parquet.x.tmp").write_bytes(b"garbage")
    res = run_corpus(src, out, minilm, layers=[0, 1], heads=[0, 1], shard_size=2, batch_size=2)
    assert res.shards_resumed == len(done_before) and res.shards_computed == 10 - len(done_before)
    t = pq.read_table(out)
    assert t.column("row").to_pylist() == [r for r in range(20) for _ in range(4)]
    ref = run_corpus(src, tmp_path / "ref.parquet", minilm, layers=[0, 1], heads=[0, 1], shard_size=7, batch_size=3)
    r = pq.read_table(ref.out)
    for s in HEAD_STATS:
        np.testing.assert_allclose(t.column(s).to_numpy(), r.column(s).to_numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_resume_refuses_other_settings(minilm, tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "o.parquet"
    run_corpus(src, out, minilm, layers=[0], heads=[0], shard_size=4, keep_parts=True)
    assert PartsDir(out).exists()
    with pytest.raises(InputError, match="different settings"):
        run_corpus(src, out, minilm, layers=[1], heads=[0], shard_size=4)


@pytest.mark.slow
def test_stream_emits_one_flushed_line_per_text(minilm):
    class Out(io.StringIO):
        flushes = 0

        def flush(self):
            Out.flushes += 1

    out, errs = Out(), io.StringIO()
    n_ok, n_err = stream_corpus(minilm, io.BytesIO(b"first text\n\nsecond one\n\xff\n"), out, layers=[1],
                                heads=[2, 4], errors_out=errs)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert (n_ok, n_err) == (2, 2) and len(lines) == 4 and Out.flushes >= 4
    assert lines[0]["layers"] == [1] and lines[0]["heads"] == [2, 4] and "error" in lines[1]
    assert set(lines[2]["stats"]) == set(HEAD_STATS) and np.shape(lines[2]["stats"]["entropy"]) == (1, 2)
    assert len(errs.getvalue().splitlines()) == 2
    from attnscope.capture import capture

    hs = capture(minilm, "second one", mode="stats", layers=[1], heads=[2, 4]).head_stats()
    np.testing.assert_allclose(lines[2]["stats"]["entropy"], hs["entropy"].numpy(), atol=1e-5)


@pytest.mark.slow
def test_cli_corpus_file_and_stdin(minilm, tmp_path):
    import typer
    from typer.testing import CliRunner

    from attnscope.corpus.cli import corpus

    app = typer.Typer()
    app.command()(corpus)
    app.command("noop")(lambda: None)  # keep 'corpus' as a named sub-command
    src = tmp_path / "c.txt"
    src.write_text("\n".join(TEXTS[:4]) + "\n")
    r = CliRunner().invoke(app, ["corpus", str(src), "--out", str(tmp_path / "o.parquet"), "--layers", "0-1",
                                 "--heads", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 4 * 2
    assert (tmp_path / "o.heads.parquet").is_file() and (tmp_path / "o.errors.jsonl").read_text() == ""
    r = CliRunner().invoke(app, ["corpus", "-", "--layers", "0", "--heads", "0"], input="one text\ntwo texts\n")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["row"] for x in lines] == [0, 1]


# ---------------------------------------------------------------------------- misuse (tiny model, no downloads)
def _jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows))
    return path


ROWS = [(f"r{i}", TEXTS[i % len(TEXTS)]) for i in range(12)]
KW = dict(layers=[0, 1], heads=[0, 2], shard_size=3, batch_size=2, id_field="id")


def _interrupted(tiny, tmp_path, keep: int) -> tuple[Path, Path, PartsDir]:
    """A run killed after ``keep`` shards: a finished run's parts with the later shards and the outputs removed."""
    src = _jsonl(tmp_path / "c.jsonl", ROWS)
    out = tmp_path / "s.parquet"
    run_corpus(src, out, tiny("bert"), keep_parts=True, **KW)
    parts = PartsDir(out)
    for i in parts.done_shards()[keep:]:
        parts.shard_path(i).unlink()
    for p in (out, tmp_path / "s.heads.parquet", tmp_path / "s.errors.jsonl"):
        p.unlink()
    return src, out, parts


def test_resume_refuses_a_changed_input(tiny, tmp_path):
    src, out, parts = _interrupted(tiny, tmp_path, keep=2)
    original = src.read_bytes()
    src.write_text("".join(original.decode().splitlines(keepends=True)[3:]))  # the first 3 rows deleted
    with pytest.raises(InputError, match=r"changed since the unfinished run.*--overwrite.*or delete"):
        run_corpus(src, out, tiny("bert"), **KW)
    same_size = original.replace(b'"r0"', b'"x0"')  # same size, other bytes
    src.write_bytes(same_size)
    with pytest.raises(InputError, match="changed since"):
        run_corpus(src, out, tiny("bert"), **KW)
    assert parts.done_shards() == [0, 1] and not out.exists()  # the refusals changed nothing
    other = _jsonl(tmp_path / "other.jsonl", ROWS)
    with pytest.raises(InputError, match="is another file"):
        run_corpus(other, out, tiny("bert"), **KW)
    # the same bytes with a new modification time: the hash matches, the run resumes
    src.write_bytes(original)
    os.utime(src, ns=(10**18, 10**18))
    res = run_corpus(src, out, tiny("bert"), **KW)
    assert (res.shards_resumed, res.shards_computed) == (2, 2)
    assert pq.read_table(out).column("text_id").to_pylist()[::4] == [i for i, _ in ROWS]


def test_overwrite_starts_over_after_a_changed_input(tiny, tmp_path):
    src, out, parts = _interrupted(tiny, tmp_path, keep=2)
    rows = ROWS[3:]
    _jsonl(src, rows)
    res = run_corpus(src, out, tiny("bert"), overwrite=True, **KW)
    assert res.shards_resumed == 0 and res.n_texts == len(rows) and not parts.exists()
    assert pq.read_table(out).column("text_id").to_pylist()[::4] == [i for i, _ in rows]


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.mark.parametrize("case, message", [
    ("missing", "corpus file not found"),
    ("directory", "is not a file"),
    ("text_field", "are all rejected"),
    ("id_field", "has the id field 'key'"),
    ("csv_id", "no column 'key'"),
    ("parquet_garbage", "not a readable Parquet file"),
])
def test_a_failed_start_leaves_nothing(tiny, tmp_path, case, message):
    data = tmp_path / "data"
    data.mkdir()
    src = _jsonl(data / "c.jsonl", ROWS)
    kw: dict = dict(layers=[0], heads=[0], progress=True)  # the progress bar counts rows first: no raw OSError
    if case == "missing":
        src = data / "typo.jsonl"
    elif case == "directory":
        src = data
    elif case == "text_field":
        kw["text_field"] = "body"
    elif case == "id_field":
        kw["id_field"] = "key"
    elif case == "csv_id":
        src = data / "c.csv"
        src.write_text("id,text\na,one text\n")
        kw["id_field"] = "key"
    else:
        src = data / "c.parquet"
        src.write_bytes(b"not parquet at all")
    work = tmp_path / "work"
    work.mkdir()
    before = _listing(tmp_path)
    with pytest.raises(InputError, match=message):
        run_corpus(src, work / "s.parquet", tiny("bert"), **kw)
    # a model name that cannot load: the input is checked first
    with pytest.raises(InputError, match=message):
        run_corpus(src, work / "s.parquet", "no-such-org/no-such-model", **kw)
    assert _listing(tmp_path) == before  # no parts directory, no manifest, no temp file
    # the corrected command runs
    res = run_corpus(data / "c.jsonl", work / "s.parquet", tiny("bert"), layers=[0], heads=[0], id_field="id")
    assert res.n_texts == len(ROWS)


def test_cli_missing_input_is_one_line(tmp_path, monkeypatch, capsys):
    from attnscope.cli import main

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as e:  # any other exception would be a traceback
            main(["corpus", "typo.jsonl", "--out", "s.parquet"])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.strip() == "error: corpus file not found: typo.jsonl"
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_checked_before_the_model_loads(tiny, tmp_path):
    src = _jsonl(tmp_path / "c.jsonl", ROWS)
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.txt").write_text("my notes")
    cases = [
        (dict(out=tmp_path / "adir", overwrite=True), "is a directory"),
        (dict(out=tmp_path / "s.parquet", aggregates=tmp_path / "adir"), "is a directory"),
        (dict(out=tmp_path / "notes.txt", overwrite=True), "not a Parquet file"),
        (dict(out="/proc/attnscope-test/s.parquet"), "cannot write"),
        (dict(out="/proc/s.parquet"), "cannot write"),
        (dict(out=tmp_path / "s.parquet", errors=tmp_path / "s.parquet"), "three different files"),
        (dict(out=src), "also an output"),
    ]
    before = _listing(tmp_path)
    for kw, message in cases:
        with pytest.raises(InputError, match=message):
            run_corpus(src, model="no-such-org/no-such-model", layers=[0], **kw)
    assert _listing(tmp_path) == before and (tmp_path / "notes.txt").read_text() == "my notes"


def test_stale_temp_files_are_removed(tiny, tmp_path):
    src, out, parts = _interrupted(tiny, tmp_path, keep=1)
    stale = [tmp_path / ".s.parquet.k1ll3d.tmp", tmp_path / ".s.heads.parquet.abc.tmp",
             tmp_path / ".s.errors.jsonl.x.tmp", parts.path / ".shard-000002.parquet.q.tmp"]
    for p in stale:
        p.write_bytes(b"half written")
    keep = [tmp_path / ".other.parquet.a.tmp", tmp_path / "s.parquet.tmp"]  # not ours
    for p in keep:
        p.write_bytes(b"someone else's")
    res = run_corpus(src, out, tiny("bert"), **KW)
    assert res.shards_resumed == 1 and res.n_texts == len(ROWS)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_duplicate_ids_are_skipped_and_reported(tiny, tmp_path):
    from attnscope.corpus import read_report

    rows = [("a", "one text"), ("b", "two texts"), ("a", "three texts"), ("c", "four"), ("b", "five"),
            ("a", "six")]
    src = _jsonl(tmp_path / "c.jsonl", rows)
    res = run_corpus(src, tmp_path / "s.parquet", tiny("bert"), layers=[0], heads=[0], shard_size=2, id_field="id")
    assert (res.n_rows, res.n_texts, res.n_errors, res.n_duplicates) == (6, 3, 3, 3)
    assert res.duplicate_ids == ["a", "b", "a"]
    t = pq.read_table(res.out)
    assert t.column("text_id").to_pylist() == ["a", "b", "c"] and t.column("row").to_pylist() == [0, 1, 3]
    errs = [json.loads(x) for x in res.errors.read_text().splitlines()]
    assert [(e["row"], e["id"]) for e in errs] == [(2, "a"), (4, "b"), (5, "a")]
    assert all("duplicate id" in e["error"] for e in errs) and "row 0" in errs[0]["error"]
    report = read_report(res.out)
    assert (report["n_rows"], report["n_texts"], report["n_errors"], report["n_duplicates"]) == (6, 3, 3, 3)
    assert report["duplicate_ids"] == ["a", "b", "a"] and report["input"]["size"] == src.stat().st_size
    # without an id field every row is its own id: nothing is a duplicate
    res = run_corpus(src, tmp_path / "n.parquet", tiny("bert"), layers=[0], heads=[0])
    assert (res.n_texts, res.n_duplicates) == (6, 0)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_output_files_follow_the_umask(tiny, tmp_path, umask):
    old = os.umask(umask)
    try:
        res = run_corpus(_jsonl(tmp_path / "c.jsonl", ROWS[:3]), tmp_path / "s.parquet", tiny("bert"), layers=[0],
                         heads=[0], keep_parts=True)
    finally:
        os.umask(old)
    files = [res.out, res.aggregates, res.errors, *PartsDir(res.out).path.iterdir()]
    assert len(files) > 4
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_the_pipeline_does_not_import_an_engine():
    import ast

    import attnscope.corpus.pipeline as pipeline

    tree = ast.parse(Path(pipeline.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("ray" in m for m in imported), imported
    from attnscope.corpus import ENGINES

    assert set(ENGINES) >= {"local", "ray"}
