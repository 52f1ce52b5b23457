"""Tokens.labels(): readable display labels from offsets into the text, or from tokenizer markers."""

from __future__ import annotations

from attnscope import Tokens

from conftest_traces import encoder_trace, seq2seq_trace

# SmolLM2 (byte-level BPE) on "The cat\n猫 sat", as its tokenizer gives them (offsets include the space)
BYTE_LEVEL = ["The", "Ġcat", "Ċ", "ç", "Į", "«", "Ġsat"]
BYTE_OFFSETS = [(0, 3), (3, 7), (7, 8), (8, 9), (8, 9), (8, 9), (9, 13)]
BYTE_TEXT = "The cat\n猫 sat"


def test_byte_level_markers_decoded_without_text():
    assert Tokens(BYTE_LEVEL).labels() == ["The", "cat", "⏎", "猫(1/3)", "猫(2/3)", "猫(3/3)", "sat"]


def test_offsets_give_the_exact_text_span():
    t = Tokens(BYTE_LEVEL, BYTE_OFFSETS)
    assert t.labels(BYTE_TEXT) == ["The", "cat", "⏎", "猫(1/3)", "猫(2/3)", "猫(3/3)", "sat"]
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
        ["<s>", "Hello", "␣", "猫(1/3)", "猫(2/3)", "猫(3/3)", "⏎", "␣×4", "."]


def test_special_and_unknown_tokens_kept():
    t = Tokens(["[CLS]", "[UNK]", "が", "[SEP]"], [(0, 0), (0, 1), (1, 2), (0, 0)], [True, False, False, True])
    assert t.labels("猫が") == ["[CLS]", "[UNK]", "が", "[SEP]"]
    gpt = Tokens(["<|endoftext|>", "Hello", "Ġworld", "ĠĠĠĠĠ", "ĉ"], special=[True, False, False, False, False])
    assert gpt.labels() == ["<|endoftext|>", "Hello", "world", "␣×5", "⇥"]


def test_plain_latin_text_is_not_mistaken_for_byte_level():
    assert Tokens(["caf", "é", "łódź", "Ġ"]).labels() == ["caf", "é", "łódź", "Ġ"]


def test_fixture_traces_labels():
    t = seq2seq_trace()
    assert t.tokens["source"].labels(t.texts["source"]) == ["Das", "ist", "ein", "Test", ".", "</s>"]
    e = encoder_trace()
    assert e.tokens["input"].labels(e.texts["input"]) == e.tokens["input"].text


# ---------------------------------------------------------------------------- real tokenizers
# Labels from the markers alone must equal the text each token covers (its offsets), shown the same way:
# the reference is computed here from the character spans, not by the code under test.
MARKERS = ("Ġ", "▁", "##", "Ċ", "ĉ")
REAL_TEXT = "Tokenizers split unbelievably long words\ninto pieces, don't they?"


def _shown(span: str) -> str:
    if not span.strip():  # whitespace only: shown as symbols (runs here are short)
        return "".join({" ": "␣", "\n": "⏎"}[c] for c in span)
    return span.strip(" ").replace("\n", "⏎")


def _trained(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [REAL_TEXT, "Words and pieces of words.", "long long words\nsplit"] * 3
    if kind == "byte-level":  # GPT-2 / Llama 3 / SmolLM2 style
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    else:  # SentencePiece style (▁ word boundary), as T5 / Llama 2 / Marian
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>"], show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


def test_byte_level_and_sentencepiece_tokenizers_show_no_markers():
    for kind in ("byte-level", "sentencepiece"):
        enc = _trained(kind).encode(REAL_TEXT)
        raw = list(enc.tokens)
        assert any(m in t for t in raw for m in MARKERS), (kind, raw)  # the tokenizer does use markers
        labels = Tokens(raw, list(enc.offsets)).labels()  # from the markers only
        assert not [t for t in labels if any(m in t for m in MARKERS)], (kind, labels)
        ref = [_shown(REAL_TEXT[a:b]) for a, b in enc.offsets]
        assert labels == ref, kind
        assert Tokens(raw, list(enc.offsets)).labels(REAL_TEXT) == ref, kind


def test_wordpiece_tokenizer_shows_no_markers():
    from attnscope.attribution.testing import minilm_tokenizer

    tok = minilm_tokenizer()
    enc = tok("Tokenizers split unbelievably long words", return_offsets_mapping=True,
              return_special_tokens_mask=True)
    raw = tok.convert_ids_to_tokens(enc["input_ids"])
    assert any(t.startswith("##") for t in raw)
    t = Tokens(raw, [tuple(o) for o in enc["offset_mapping"]], enc["special_tokens_mask"], enc["input_ids"])
    labels = t.labels()
    assert labels[0] == "[CLS]" and labels[-1] == "[SEP]"
    body = [i for i, sp in enumerate(enc["special_tokens_mask"]) if not sp]
    text = "Tokenizers split unbelievably long words"
    assert [labels[i] for i in body] == [text[a:b].lower() for a, b in (enc["offset_mapping"][i] for i in body)]
    assert [t.labels(text)[i] for i in body] == [text[a:b] for a, b in (enc["offset_mapping"][i] for i in body)]


def test_lm_target_label_has_no_marker():
    from types import SimpleNamespace

    from transformers import PreTrainedTokenizerFast

    from attnscope.attribution.gradients import target_label

    tok = PreTrainedTokenizerFast(tokenizer_object=_trained("byte-level"))
    tid = tok(" words", add_special_tokens=False)["input_ids"][0]
    assert tok.convert_ids_to_tokens([tid])[0].startswith("Ġ")
    assert target_label(SimpleNamespace(kind="causal", tokenizer=tok), tid) == tok.decode([tid]).strip()
