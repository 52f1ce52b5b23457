"""Tokens.labels(): readable display labels from offsets into the text, or from tokenizer markers."""

from __future__ import annotations

from attnscope import Tokens

from conftest_traces import encoder_trace, seq2seq_trace

# SmolLM2 (byte-level BPE) on "The cat\n猫 sat", as its tokenizer gives them (offsets include the space)
BYTE_LEVEL = ["The", "Ġcat", "Ċ", "ç", "Į", "«", "Ġsat"]
BYTE_OFFSETS = [(0, 3), (3, 7), (7, 8), (8, 9), (8, 9), (8, 9), (9, 13)]
BYTE_TEXT = "The cat\n猫 sat"


def test_byte_level_markers_decoded_without_text():
    assert Tokens(BYTE_LEVEL).labels() == ["The", "cat", "\\n", "猫(1/3)", "猫(2/3)", "猫(3/3)", "sat"]


def test_offsets_give_the_exact_text_span():
    t = Tokens(BYTE_LEVEL, BYTE_OFFSETS)
    assert t.labels(BYTE_TEXT) == ["The", "cat", "\\n", "猫(1/3)", "猫(2/3)", "猫(3/3)", "sat"]
    # an uncased WordPiece model lowercases and strips accents: the span restores what was written
    w = Tokens(["[CLS]", "cafe", "##s", "are", "open", "[SEP]"], [(0, 0), (0, 4), (4, 5), (6, 9), (10, 14), (0, 0)],
               [True, False, False, False, False, True])
    assert w.labels("Cafés are open") == ["[CLS]", "Café", "s", "are", "open", "[SEP]"]
    assert w.labels() == ["[CLS]", "cafe", "s", "are", "open", "[SEP]"]


def test_offsets_that_do_not_fit_the_text_are_not_trusted():
    t = Tokens(["the", "cat", "sat"], [(0, 3), (3, 6), (6, 9)])
    assert t.labels("xx the cat sat") == ["the", "cat", "sat"]  # spans "xx ", "the", " ca": markers instead


def test_sentencepiece_and_byte_fallback():
    toks = ["<s>", "▁Hello", "▁", "<0xE7>", "<0x8C>", "<0xAB>", "<0x0A>", "▁▁▁▁", "."]
    assert Tokens(toks, special=[True] + [False] * 8).labels() == \
        ["<s>", "Hello", "␣", "猫(1/3)", "猫(2/3)", "猫(3/3)", "\\n", "␣×4", "."]


def test_special_and_unknown_tokens_kept():
    t = Tokens(["[CLS]", "[UNK]", "が", "[SEP]"], [(0, 0), (0, 1), (1, 2), (0, 0)], [True, False, False, True])
    assert t.labels("猫が") == ["[CLS]", "[UNK]", "が", "[SEP]"]
    gpt = Tokens(["<|endoftext|>", "Hello", "Ġworld", "ĠĠĠĠĠ", "ĉ"], special=[True, False, False, False, False])
    assert gpt.labels() == ["<|endoftext|>", "Hello", "world", "␣×5", "\\t"]


def test_plain_latin_text_is_not_mistaken_for_byte_level():
    assert Tokens(["caf", "é", "łódź", "Ġ"]).labels() == ["caf", "é", "łódź", "Ġ"]


def test_fixture_traces_labels():
    t = seq2seq_trace()
    assert t.tokens["source"].labels(t.texts["source"]) == ["Das", "ist", "ein", "Test", ".", "</s>"]
    e = encoder_trace()
    assert e.tokens["input"].labels(e.texts["input"]) == e.tokens["input"].text
