"""Parallel data: TSV loader, tokenisers, vocabularies and the generated tasks."""

from __future__ import annotations

import datetime as dt

import pytest

from attnscope.errors import InputError, UnknownNameError
from attnscope.seq2seq.data import (
    DATE_FORMATS,
    EOS_ID,
    Vocab,
    detokenize,
    format_date,
    generate_dates,
    generate_svo_sov,
    load_tsv,
    task_pairs,
    tokenize,
)


def test_tsv_takes_first_two_columns_and_skips_blank_lines(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "pairs.tsv"
    p.write_text("\ufeffGo.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\n\nHi.\tSalut !\n", encoding="utf-8")
    pairs = load_tsv(p)
    assert [(x.source, x.target) for x in pairs] == [("Go.", "Va !"), ("Hi.", "Salut !")]


@pytest.mark.parametrize("content, line, words", [
    ("a\tb\nno tab here\n", 2, "no tab"),
    ("a\tb\nc\tb\n\t x\n", 3, "source"),
    ("a\t \n", 1, "target"),
])
def test_tsv_errors_name_the_line(tmp_path, content: str, line: int, words: str) -> None:  # noqa: ANN001
    p = tmp_path / "bad.tsv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=rf"bad\.tsv:{line}: .*{words}"):
        load_tsv(p)


def test_tsv_non_utf8_and_missing(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "latin1.tsv"
    p.write_bytes("ok\tok\ncaf\xe9\tx\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.tsv:2: not valid UTF-8"):
        load_tsv(p)
    with pytest.raises(InputError, match="no such file"):
        load_tsv(tmp_path / "missing.tsv")
    (tmp_path / "empty.tsv").write_text("\n\n")
    with pytest.raises(InputError, match="no 'source<TAB>target' pairs"):
        load_tsv(tmp_path / "empty.tsv")


def test_tokenize_offsets_and_detokenize() -> None:
    text = "March 3, 2021"
    toks, offs = tokenize(text, "char")
    assert len(toks) == len(text) and toks[5] == "▁" and all(text[a:b] in (t, " ") for t, (a, b) in zip(toks, offs))
    assert detokenize(toks, "char")[0] == text
    w, wo = tokenize("the dog, eats", "word")
    assert w == ["the", "dog", ",", "eats"] and wo[2] == (7, 8)
    out, spans = detokenize(["inu", "wa"], "word")
    assert out == "inu wa" and spans == [(0, 3), (4, 6)]
    with pytest.raises(UnknownNameError):
        tokenize("x", "bpe")


def test_vocab_round_trip_and_unknown() -> None:
    v = Vocab.build([["a", "b", "a"], ["c"]])
    assert v.itos[:4] == ["<pad>", "<s>", "</s>", "<unk>"] and v.itos[4] == "a"
    ids = v.encode(["a", "zzz"], add_bos=True)
    assert ids[0] == 1 and ids[2] == 3 and ids[-1] == EOS_ID
    assert v.decode(ids) == ["a", "<unk>"]
    assert Vocab.from_json(v.to_json()).stoi == v.stoi


def test_dates_are_correct_deterministic_and_cover_formats() -> None:
    a, b = generate_dates(300, seed=3), generate_dates(300, seed=3)
    assert a == b and a != generate_dates(300, seed=4)
    assert len({p.source for p in a}) == 300
    for p in a:
        d = dt.date.fromisoformat(p.target)
        assert str(d.year) in p.source
    d = dt.date(2021, 3, 3)
    assert format_date(d, "ordinal-of") == "3rd of March 2021"
    assert format_date(d, "month-day-year") == "March 3, 2021"
    assert format_date(d, "mm/dd/yyyy") == "03/03/2021"
    assert format_date(dt.date(2011, 11, 12), "ordinal-of") == "12th of November 2011"
    assert format_date(d, "weekday").startswith("Wednesday")
    assert len(DATE_FORMATS) >= 8


def test_svo_sov_reorders_and_is_deterministic() -> None:
    pairs = generate_svo_sov(200, seed=1)
    assert pairs == generate_svo_sov(200, seed=1)
    for p in pairs:
        src, tgt = p.source.split(), p.target.split()
        assert "wa" in tgt and "o" in tgt
        # the verb comes last in the target but right after the subject in the source
        assert tgt[-1] not in ("o", "wa") and tgt[tgt.index("o") + 1] in {v for pair in [
            ("taberu", "tabeta"), ("yomu", "yonda"), ("miru", "mita"), ("kaku", "kaita"), ("kau", "katta"),
            ("konomu", "kononda"), ("mitsukeru", "mitsuketa"), ("uru", "utta")] for v in pair}
    assert any("kouen" in p.target and p.target.index("kouen") < p.target.index(" o ") for p in pairs)


def test_task_pairs_held_out_is_disjoint() -> None:
    train, test = task_pairs("dates", 500, 100, seed=0)
    assert not {p.source for p in train} & {p.source for p in test}
    with pytest.raises(UnknownNameError, match="dates"):
        task_pairs("poetry", 1, 1)
