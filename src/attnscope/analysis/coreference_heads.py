"""Coreference heads (after Clark et al. 2019, "What Does BERT Look At?", BlackboxNLP, §4.3): how often
the attention of a pronoun puts more weight on its antecedent than on the other candidate noun.

Two families of items, written for attnscope, each with two candidate nouns before a pronoun:

- ``winograd``: Winograd-style pairs (in the style of Levesque et al. 2012, "The Winograd Schema
  Challenge", KR): the antecedent is fixed by one switch word, which mostly comes *after* the pronoun. A
  decoder's pronoun row cannot see it, so the two items of a schema give a decoder the same pronoun row and
  every decoder head scores exactly 0.5 on this family: it measures bidirectional encoders only.
- ``agreement``: the antecedent is fixed by the pronoun itself (gender or number agreement: "The king
  thanked the queen because she …"), each schema in both noun orders and with both pronouns; usable by
  decoders too.

Every schema gives items whose antecedents differ and whose nearer noun is the antecedent in exactly half
of them, so the antecedent is known by construction and the nearest-noun baseline (and the first-noun
one) scores 0.5 on each family. A head's prediction is the candidate its word-level attention from the
pronoun weighs more (:mod:`attnscope.analysis.word_attention`; a tie counts one half).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .results import _jsonable
from .word_attention import word_spans

# (sentence with {} for the switch word, candidate A, candidate B, pronoun, (switch, antecedent), (switch, antecedent))
SCHEMAS: tuple[tuple[str, str, str, str, tuple[str, str], tuple[str, str]], ...] = (
    ("The trophy did not fit in the suitcase because it was too {}.", "trophy", "suitcase", "it",
     ("big", "trophy"), ("small", "suitcase")),
    ("The city council refused the demonstrators a permit because they {} violence.", "council", "demonstrators",
     "they", ("feared", "council"), ("advocated", "demonstrators")),
    ("The man could not lift his son because he was so {}.", "man", "son", "he", ("weak", "man"), ("heavy", "son")),
    ("The fish ate the worm because it was {}.", "fish", "worm", "it", ("hungry", "fish"), ("tasty", "worm")),
    ("The cat caught the mouse because it was so {}.", "cat", "mouse", "it", ("fast", "cat"), ("slow", "mouse")),
    ("The truck passed the bus because it was going so {}.", "truck", "bus", "it", ("fast", "truck"),
     ("slowly", "bus")),
    ("Tom threw his bag down to Ray after he reached the {} of the stairs.", "Tom", "Ray", "he", ("top", "Tom"),
     ("bottom", "Ray")),
    ("The bottle did not fit into the box because it was too {}.", "bottle", "box", "it", ("large", "bottle"),
     ("small", "box")),
    ("The table would not go through the door because it was too {}.", "table", "door", "it", ("wide", "table"),
     ("narrow", "door")),
    ("Anna did better than Maria on the test because she had studied {}.", "Anna", "Maria", "she",
     ("harder", "Anna"), ("less", "Maria")),
    ("The rock smashed the window because it was so {}.", "rock", "window", "it", ("heavy", "rock"),
     ("fragile", "window")),
    ("The hammer broke the vase because it was so {}.", "hammer", "vase", "it", ("hard", "hammer"),
     ("delicate", "vase")),
    ("The mother fed the girl because she was {}.", "mother", "girl", "she", ("caring", "mother"),
     ("hungry", "girl")),
    ("The boy helped the old man because he was {}.", "boy", "man", "he", ("strong", "boy"), ("frail", "man")),
    ("The coach fired the player because he {} the team rules.", "coach", "player", "he", ("enforced", "coach"),
     ("broke", "player")),
    ("The customer paid the waiter because he had {} the meal.", "customer", "waiter", "he", ("eaten", "customer"),
     ("served", "waiter")),
    ("The student thanked the professor because she had {} so much.", "student", "professor", "she",
     ("learned", "student"), ("taught", "professor")),
    ("The company bought the startup because it was so {}.", "company", "startup", "it", ("rich", "company"),
     ("cheap", "startup")),
    ("The lamp could not light the room because it was too {}.", "lamp", "room", "it", ("dim", "lamp"),
     ("large", "room")),
    ("The wolf attacked the sheep because it was {}.", "wolf", "sheep", "it", ("hungry", "wolf"),
     ("defenceless", "sheep")),
    ("The laptop did not fit in the bag because it was too {}.", "laptop", "bag", "it", ("wide", "laptop"),
     ("narrow", "bag")),
    ("The runner beat the champion because he was {}.", "runner", "champion", "he", ("faster", "runner"),
     ("injured", "champion")),
    ("The dog chased the cat because it was {}.", "dog", "cat", "it", ("playful", "dog"), ("fleeing", "cat")),
    ("The doctor told the patient that she should {} the results soon.", "doctor", "patient", "she",
     ("send", "doctor"), ("expect", "patient")),
)


# (sentence with {} for noun A, noun B and the pronoun, (noun, pronoun), (noun, pronoun)): both noun orders,
# both pronouns -> four items
AGREEMENT: tuple[tuple[str, tuple[str, str], tuple[str, str]], ...] = (
    ("The {} thanked the {} because {} was kind.", ("king", "he"), ("queen", "she")),
    ("The {} called the {} because {} was late.", ("father", "he"), ("mother", "she")),
    ("The {} greeted the {} before {} left.", ("boy", "he"), ("girl", "she")),
    ("The {} visited the {} because {} was lonely.", ("uncle", "he"), ("aunt", "she")),
    ("The {} helped the {} because {} was tired.", ("brother", "he"), ("sister", "she")),
    ("The {} watched the {} while {} waited outside.", ("students", "they"), ("actor", "he")),
    ("The {} praised the {} because {} worked hard.", ("workers", "they"), ("manager", "she")),
    ("The {} met the {} after {} arrived.", ("husband", "he"), ("wife", "she")),
)


@dataclass(frozen=True)
class CorefItem:
    """One sentence: ``candidates`` = word indices of the two nouns, ``pronoun`` its word index, ``antecedent``
    the index (0 or 1) of the right candidate; ``spans`` the words' character spans."""

    text: str
    spans: tuple[tuple[int, int], ...]
    candidates: tuple[int, int]
    pronoun: int
    antecedent: int
    family: str = "winograd"

    @property
    def nearest(self) -> int:
        """The candidate nearer the pronoun (0 or 1)."""
        a, b = self.candidates
        return 0 if abs(self.pronoun - a) < abs(self.pronoun - b) else 1


def _item(text: str, a: str, b: str, pronoun: str, answer: str, family: str) -> CorefItem:
    spans = tuple(word_spans(text))
    words = [text[s:e] for s, e in spans]
    ia, ib = words.index(a), words.index(b)
    ip = next(i for i in range(max(ia, ib) + 1, len(words)) if words[i].lower() == pronoun)
    return CorefItem(text, spans, (ia, ib), ip, 0 if answer == a else 1, family)


def coreference_items(schemas: Sequence = SCHEMAS, agreement: Sequence = AGREEMENT) -> list[CorefItem]:
    """The template set: two ``winograd`` items per schema (one per switch word), four ``agreement`` items
    per agreement schema (two noun orders × two pronouns)."""
    out = []
    for template, a, b, pronoun, *switches in schemas:
        for switch, answer in switches:
            if answer not in (a, b):
                raise InputError(f"schema {template!r}: the antecedent {answer!r} is not a candidate")
            out.append(_item(template.format(switch), a, b, pronoun, answer, "winograd"))
    for template, (x, px), (y, py) in agreement:
        for first, second in ((x, y), (y, x)):
            for noun, pron in ((x, px), (y, py)):
                out.append(_item(template.format(first, second, pron), first, second, pron, noun, "agreement"))
    return out


@dataclass
class CoreferenceHeads:
    """Per-head antecedent accuracy (layer, head) on the template set, and the baselines."""

    accuracy: np.ndarray  # (layer, head) over every item
    layers: list[int]
    heads: list[int]
    n_items: int
    baselines: dict[str, float]
    family_accuracy: dict[str, np.ndarray] = field(default_factory=dict)  # family -> (layer, head)
    name: str = "coreference_heads"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any]:
        li, hi = np.unravel_index(int(self.accuracy.argmax()), self.accuracy.shape)
        return {"layer": int(self.layers[li]), "head": int(self.heads[hi]), "accuracy": float(self.accuracy[li, hi])}

    def to_dict(self) -> dict[str, Any]:
        return {"type": "CoreferenceHeads", "name": self.name, "layers": self.layers, "heads": self.heads,
                "accuracy": _jsonable(self.accuracy), "n_items": self.n_items, "baselines": self.baselines,
                "family_accuracy": _jsonable(self.family_accuracy), "best": self.best,
                "best_by_family": self.best_by_family(), "meta": _jsonable(self.meta)}

    def best_by_family(self) -> dict[str, dict[str, Any]]:
        out = {}
        for fam, a in self.family_accuracy.items():
            li, hi = np.unravel_index(int(a.argmax()), a.shape)
            out[fam] = {"layer": int(self.layers[li]), "head": int(self.heads[hi]), "accuracy": float(a[li, hi])}
        return out


def coreference_heads(items: Sequence[CorefItem], word_maps: Sequence[np.ndarray],
                      layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> CoreferenceHeads:
    """Accuracy of each head: ``word_maps[i]`` (L, H, W, W) word-level attention of ``items[i]``."""
    if not items or len(items) != len(word_maps):
        raise InputError(f"give one word map per item: {len(items)} items, {len(word_maps)} maps")
    scores = []
    for it, m in zip(items, word_maps):
        row = np.asarray(m)[..., it.pronoun, :]  # (L, H, W)
        right = row[..., it.candidates[it.antecedent]]
        wrong = row[..., it.candidates[1 - it.antecedent]]
        scores.append((right > wrong) + 0.5 * (right == wrong))  # (L, H)
    score = np.stack(scores)  # (items, L, H)
    L, H = score.shape[1:]
    fams = np.array([it.family for it in items])
    baselines = {"nearest_noun": float(np.mean([it.nearest == it.antecedent for it in items])),
                 "first_noun": float(np.mean([it.antecedent == 0 for it in items]))}
    return CoreferenceHeads(score.mean(0), list(layers if layers is not None else range(L)),
                            list(heads if heads is not None else range(H)), len(items), baselines,
                            {f: score[fams == f].mean(0) for f in dict.fromkeys(fams.tolist())})
