"""Linguistic head roles: word-level attention (Clark et al. 2019 merging), CoNLL-U input, syntactic heads with the
fixed-offset baseline, coreference heads with the nearest-noun baseline, the head_roles record, the spaCy route."""

from __future__ import annotations

import numpy as np
import pytest

from attnscope.analysis.coreference_heads import coreference_heads, coreference_items
from attnscope.analysis.syntactic_heads import Sentence, read_conllu, syntactic_heads, to_conllu
from attnscope.analysis.word_attention import token_to_word, word_attention, word_spans
from attnscope.errors import InputError

# "The dogs barked loudly." hand-parsed (UD style), with a multi-word token line and SpaceAfter=No
CONLLU = """# sent_id = 1
# text = The dogs barked loudly.
1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_
2\tdogs\tdog\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tbarked\tbark\tVERB\t_\t_\t0\troot\t_\t_
4\tloudly\tloudly\tADV\t_\t_\t3\tadvmod\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

1\tA\ta\tDET\t_\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\t_\t_\t3\tnsubj:pass\t_\t_
3-4\twasn't\t_\t_\t_\t_\t_\t_\t_\t_
3\twas\tbe\tAUX\t_\t_\t0\troot\t_\t_
4\tn't\tnot\tPART\t_\t_\t3\tadvmod\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_
"""


def test_read_conllu_and_round_trip():
    s = read_conllu(CONLLU)
    assert len(s) == 2
    assert s[0].words == ["The", "dogs", "barked", "loudly", "."]
    assert s[0].heads == [1, 2, -1, 2, 2] and s[0].deprels == ["det", "nsubj", "root", "advmod", "punct"]
    assert s[0].spans[4] == (22, 23)
    assert s[1].text == "A cat was n't." and s[1].deprels[1] == "nsubj"  # no "# text": rebuilt; subtype dropped
    back = read_conllu(to_conllu(s))
    assert [(x.text, x.words, x.spans, x.heads, x.deprels) for x in back] == \
        [(x.text, x.words, x.spans, x.heads, x.deprels) for x in s]
    with pytest.raises(InputError, match="10 tab-separated"):
        read_conllu("1\tThe\tthe\n")
    with pytest.raises(InputError, match="governor"):
        Sentence("a b", ["a", "b"], [(0, 1), (2, 3)], [0, -1], ["x", "root"])


def test_token_to_word_and_word_attention_by_hand():
    text = "The company's profits"
    spans = word_spans(text)
    assert [text[a:b] for a, b in spans] == ["The", "company's", "profits"]
    # BPE-style offsets: a leading space in the token's span; a whitespace-only token; a special token
    offsets = [(0, 0), (0, 3), (3, 11), (11, 13), (13, 14), (14, 21)]
    special = [True, False, False, False, False, False]
    assign = token_to_word(offsets, special, spans)
    assert assign.tolist() == [-1, 0, 1, 1, -1, 2]
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(6), size=(2, 3, 6))  # (L, H, N, N)
    maps, ok = word_attention(w, assign, 3)
    assert ok.tolist() == [True, True, True]
    # from word 1 (tokens 2, 3): mean of the rows; to word 1: sum of the columns
    ref = np.empty((2, 3, 3, 3))
    toks = {0: [1], 1: [2, 3], 2: [5]}
    for i, ti in toks.items():
        for j, tj in toks.items():
            ref[..., i, j] = np.mean([w[..., a, tj].sum(-1) for a in ti], axis=0)
    np.testing.assert_allclose(maps, ref, rtol=1e-12)


def _pointer_maps(n: int, targets: list[int]) -> np.ndarray:
    m = np.full((n, n), 0.01)
    for i, t in enumerate(targets):
        m[i, t] = 1.0
    return m


def test_syntactic_heads_accuracy_and_offset_baseline():
    s = read_conllu(CONLLU)[0]  # heads [1, 2, -1, 2, 2]
    n = len(s.words)
    gov = [h if h >= 0 else 0 for h in s.heads]
    prev = [n - 1] + list(range(n - 1))  # the previous word (the first word: the last)
    maps = np.stack([np.stack([_pointer_maps(n, gov), _pointer_maps(n, prev)])])  # (1, 2, W, W)
    r = syntactic_heads([s], [(maps, np.ones(n, bool))], min_count=1)
    acc = r.accuracy
    assert acc["det:dep2gov"][0].tolist() == [1.0, 0.0]
    assert acc["nsubj:dep2gov"][0].tolist() == [1.0, 0.0]
    assert acc["advmod:dep2gov"][0].tolist() == [1.0, 1.0]  # loudly -> barked is the previous word
    row = {(x["relation"], x["direction"]): x for x in r.rows}
    # det: The(0) -> dogs(1), offset +1: the fixed-offset baseline is right
    assert row[("det", "dep2gov")]["baseline"] == 1.0 and row[("det", "dep2gov")]["baseline_offset"] == 1
    # punct: . (4) -> barked (2): offset -2
    assert row[("punct", "dep2gov")]["baseline_offset"] == -2
    # gov->dep for det: from dogs(1) the governor head predicts barked, the previous-word head The
    assert acc["det:gov2dep"][0].tolist() == [0.0, 1.0]
    assert row[("det", "dep2gov")]["layer"] == 0 and row[("det", "dep2gov")]["head"] == 0
    # a decoder cannot attend to a later word: those arcs are unreachable, the baseline offsets negative
    c = syntactic_heads([s], [(maps, np.ones(n, bool))], min_count=1, causal=True)
    crow = {(x["relation"], x["direction"]): x for x in c.rows}
    assert ("det", "dep2gov") not in crow and "det:dep2gov" not in c.accuracy  # The -> dogs points forward
    assert crow[("det", "gov2dep")]["unreachable"] == 0 and crow[("det", "gov2dep")]["count"] == 1
    assert all(x["baseline_offset"] < 0 for x in c.rows)


def test_coreference_set_and_accuracy():
    items = coreference_items()
    fams = {it.family for it in items}
    assert fams == {"winograd", "agreement"}
    for fam in fams:
        sub = [it for it in items if it.family == fam]
        assert np.mean([it.nearest == it.antecedent for it in sub]) == 0.5  # balanced by construction
    it = next(i for i in items if i.text.startswith("The trophy") and i.text.endswith("big."))
    words = [it.text[a:b] for a, b in it.spans]
    assert words[it.candidates[it.antecedent]] == "trophy" and words[it.pronoun] == "it"
    # head 0 follows the antecedent, head 1 the nearer noun, head 2 ties
    maps = []
    for x in items:
        W = len(x.spans)
        m = np.zeros((1, 3, W, W))
        m[0, 0, x.pronoun, x.candidates[x.antecedent]] = 1
        m[0, 1, x.pronoun, x.candidates[x.nearest]] = 1
        m[0, 2, x.pronoun, list(x.candidates)] = 0.5
        maps.append(m)
    r = coreference_heads(items, maps)
    np.testing.assert_allclose(r.accuracy[0], [1.0, 0.5, 0.5])
    assert r.baselines == {"nearest_noun": 0.5, "first_noun": 0.5}
    assert r.best == {"layer": 0, "head": 0, "accuracy": 1.0}


@pytest.fixture(scope="module")
def bert(tiny):
    return tiny("bert")


def test_roles_on_a_model_match_a_direct_computation(bert):
    """The model route against a computation here: capture each sentence, merge by hand, count by hand."""
    import attnscope
    from attnscope.attribution.linguistic_heads import coreference_roles, syntactic_roles

    sents = read_conllu(CONLLU)
    r = syntactic_roles(bert, sents, min_count=1)
    hits = {}
    for s in sents:
        t = attnscope.capture(bert, s.text, mode="full", full_dtype=__import__("torch").float32)
        w = t.weights().double().numpy()  # (L, H, N, N)
        tok = t.query_tokens()
        members = [[k for k, (a, b) in enumerate(tok.offsets) if not tok.special[k] and a < e and b > st]
                   for st, e in s.spans]
        for d, g in enumerate(s.heads):
            if g < 0:
                continue
            key = f"{s.deprels[d]}:dep2gov"
            score = np.stack([w[..., members[d], :][..., members[j]].sum(-1).mean(-1) for j in range(len(s.words))],
                             -1)  # (L, H, W)
            score[..., d] = -1
            hits.setdefault(key, []).append(score.argmax(-1) == g)
    for key, h in hits.items():
        np.testing.assert_allclose(r.accuracy[key], np.mean(h, 0))
    items = coreference_items()[:4]
    c = coreference_roles(bert, items)
    assert c.accuracy.shape == (2, 4) and ((c.accuracy >= 0) & (c.accuracy <= 1)).all()


def test_head_roles_carries_the_linguistic_record(bert, monkeypatch):
    import attnscope
    from attnscope.analysis import linguistic_tables, run_analysis

    record = {"source": "test", "syntactic": {"rows": [
        {"relation": "det", "direction": "dep2gov", "count": 5, "layer": 1, "head": 2, "accuracy": 0.9,
         "baseline": 0.5, "baseline_offset": 1},
        {"relation": "amod", "direction": "gov2dep", "count": 5, "layer": 0, "head": 0, "accuracy": 0.3,
         "baseline": 0.6, "baseline_offset": -1}]},  # below its baseline: no label
        "coreference": {"best_by_family": {"agreement": {"layer": 0, "head": 3, "accuracy": 0.8}},
                        "baselines": {"nearest_noun": 0.5}, "n_items": 4}}
    monkeypatch.setitem(linguistic_tables.TABLES, bert.name, record)
    t = attnscope.capture(bert, "the cat sat", mode="full")
    ling = run_analysis("head_roles", t).meta["linguistic"]
    assert ling["labels"][1][2] == "det dep→gov" and ling["labels"][0][3] == "coref (agreement)"
    assert ling["labels"][0][0] == "" and ling["source"] == "test"
    d = run_analysis("head_roles", t).to_dict()  # what REST returns
    assert d["meta"]["linguistic"]["labels"][1][2] == "det dep→gov"
    monkeypatch.delitem(linguistic_tables.TABLES, bert.name)
    assert "linguistic" not in run_analysis("head_roles", t).meta


@pytest.mark.slow
def test_spacy_parses_offline_when_installed():
    pytest.importorskip("spacy")
    from attnscope.attribution.linguistic_heads import parse_texts

    try:
        s = parse_texts(["The cat sat on the mat near the door."], max_sentences=1)
    except InputError:
        pytest.skip("the spaCy pipeline is not installed")
    assert len(s) == 1 and s[0].heads.count(-1) == 1
    assert s[0].words[1] == "cat" and s[0].heads[1] == s[0].words.index("sat")
