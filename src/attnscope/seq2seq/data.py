"""Parallel data for the seq2seq models: a TSV loader, tokenisers with character offsets,
vocabularies, and two generated tasks with real alignment structure.

- ``dates``: date normalisation, character level ("3rd of March 2021", "March 3, 2021",
  "03/03/2021", ... -> "2021-03-03"). Digits are copied (a diagonal alignment) while month names are
  translated and the year moves to the front (a reordering).
- ``svo-sov``: an English-like subject-verb-object language translated into a Japanese-like
  subject-object-verb language with postpositional particles (``wa``, ``o``, ``de``), word level:
  the verb moves to the end and place phrases move before the object, so alignments are non-monotonic.

Both are deterministic functions of a seed.
"""

from __future__ import annotations

import datetime as _dt
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import InputError, UnknownNameError

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

TokenizerKind = Literal["char", "word"]
TOKENIZERS: tuple[str, ...] = get_args(TokenizerKind)
TaskName = Literal["dates", "svo-sov"]
TASKS: tuple[str, ...] = get_args(TaskName)

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Pair:
    """One parallel example."""

    source: str
    target: str


def tokenize(text: str, kind: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens of ``text`` and their character spans. ``char``: every character except spaces is a
    token (spaces are kept as the token ``"▁"`` so they can be copied); ``word``: words and
    punctuation (regex ``\\w+|[^\\w\\s]``)."""
    if kind == "char":
        toks = ["▁" if c == " " else c for c in text]
        return toks, [(i, i + 1) for i in range(len(text))]
    if kind == "word":
        ms = list(_WORD.finditer(text))
        return [m.group() for m in ms], [m.span() for m in ms]
    raise UnknownNameError("tokenizer", kind, TOKENIZERS)


def detokenize(tokens: list[str], kind: str) -> tuple[str, list[tuple[int, int]]]:
    """The text of generated tokens and each token's span in it (inverse of :func:`tokenize` up to spacing)."""
    spans, out, pos = [], [], 0
    for i, t in enumerate(tokens):
        piece = (" " if t == "▁" else t) if kind == "char" else t
        if kind == "word" and i > 0:
            out.append(" ")
            pos += 1
        spans.append((pos, pos + len(piece)))
        out.append(piece)
        pos += len(piece)
    return "".join(out), spans


@dataclass
class Vocab:
    """Token <-> id. Ids 0..3 are ``<pad> <s> </s> <unk>``."""

    itos: list[str] = field(default_factory=lambda: list(SPECIALS))

    def __post_init__(self) -> None:
        if list(self.itos[:4]) != list(SPECIALS):
            raise InputError(f"a vocabulary must start with {SPECIALS}, got {self.itos[:4]}")
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sequences: list[list[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        counts: dict[str, int] = {}
        for seq in sequences:
            for t in seq:
                counts[t] = counts.get(t, 0) + 1
        toks = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS), key=lambda t: (-counts[t], t))
        if max_size is not None:
            toks = toks[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + toks)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str], add_bos: bool = False, add_eos: bool = True) -> list[int]:
        ids = [self.stoi.get(t, UNK_ID) for t in tokens]
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: list[int], strip: bool = True) -> list[str]:
        """Tokens of ``ids``; with ``strip`` stops at ``</s>`` and drops ``<s>``/``<pad>``."""
        out = []
        for i in ids:
            if strip and i == EOS_ID:
                break
            if strip and i in (PAD_ID, BOS_ID):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    def to_json(self) -> list[str]:
        return list(self.itos)

    @classmethod
    def from_json(cls, itos: list[str]) -> Vocab:
        return cls(list(itos))


# ---------------------------------------------------------------------------- TSV loader
def load_tsv(path: str | Path, max_pairs: int | None = None) -> list[Pair]:
    """Read ``source<TAB>target`` lines (UTF-8). Extra columns (Tatoeba exports carry ids and
    attribution) are ignored; blank lines are skipped; a line with fewer than two columns or an empty
    side raises :class:`InputError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass a UTF-8 file with one 'source<TAB>target' pair per line")
    pairs: list[Pair] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{line_no}: not valid UTF-8 ({e.reason} at byte {e.start}); save the file as UTF-8") from None
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                raise InputError(
                    f"{path}:{line_no}: expected 'source<TAB>target' but the line has no tab: {line[:60]!r}"
                )
            src, tgt = cols[0].strip(), cols[1].strip()
            if not src or not tgt:
                side = "source" if not src else "target"
                raise InputError(f"{path}:{line_no}: the {side} (column {1 if side == 'source' else 2}) is empty")
            pairs.append(Pair(src, tgt))
            if max_pairs is not None and len(pairs) >= max_pairs:
                break
    if not pairs:
        raise InputError(f"{path}: no 'source<TAB>target' pairs found")
    return pairs


# ---------------------------------------------------------------------------- dates task
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


DATE_FORMATS: list[tuple[str, Any]] = [
    ("ordinal-of", lambda d: f"{_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}"),
    ("month-day-year", lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}"),
    ("mm/dd/yyyy", lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}"),
    ("dd.mm.yyyy", lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}"),
    ("d mon yyyy", lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}"),
    ("weekday", lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}"),
    ("lower", lambda d: f"{d.day} {MONTHS[d.month - 1].lower()} {d.year}"),
    ("yyyy/m/d", lambda d: f"{d.year}/{d.month}/{d.day}"),
    ("mon-ord", lambda d: f"{MONTHS[d.month - 1][:3]}. {_ordinal(d.day)}, {d.year}"),
    ("dd-mon-yy", lambda d: f"{d.day:02d}-{MONTHS[d.month - 1][:3].upper()}-{d.year}"),
]


def format_date(d: _dt.date, fmt: str) -> str:
    """``d`` written in one of the named ``DATE_FORMATS``."""
    for name, f in DATE_FORMATS:
        if name == fmt:
            return f(d)
    raise UnknownNameError("date format", fmt, [n for n, _ in DATE_FORMATS])


def generate_dates(n: int, seed: int = 0, start_year: int = 1950, end_year: int = 2049,
                   exclude: set[str] | None = None) -> list[Pair]:
    """``n`` distinct (human-written date, ISO date) pairs, deterministic from ``seed``."""
    rng = random.Random(seed)
    start = _dt.date(start_year, 1, 1).toordinal()
    end = _dt.date(end_year, 12, 31).toordinal()
    seen = set(exclude or ())
    out: list[Pair] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise InputError(f"could not generate {n} distinct dates; lower n or widen the year range")
        d = _dt.date.fromordinal(rng.randint(start, end))
        _, f = DATE_FORMATS[rng.randrange(len(DATE_FORMATS))]
        src = f(d)
        if src in seen:
            continue
        seen.add(src)
        out.append(Pair(src, d.isoformat()))
    return out


# ---------------------------------------------------------------------------- SVO -> SOV task
# English-like lexicon -> Japanese-like (romanised) words.
NOUNS = {"dog": "inu", "cat": "neko", "boy": "shounen", "girl": "shoujo", "teacher": "sensei",
         "student": "gakusei", "doctor": "isha", "bird": "tori", "child": "kodomo", "friend": "tomodachi"}
OBJECTS = {"apple": "ringo", "book": "hon", "letter": "tegami", "fish": "sakana", "bread": "pan",
           "song": "uta", "picture": "e", "car": "kuruma", "ball": "booru", "tea": "ocha"}
VERBS = {  # present, past -> present, past
    ("eats", "ate"): ("taberu", "tabeta"), ("reads", "read"): ("yomu", "yonda"),
    ("sees", "saw"): ("miru", "mita"), ("writes", "wrote"): ("kaku", "kaita"),
    ("buys", "bought"): ("kau", "katta"), ("likes", "liked"): ("konomu", "kononda"),
    ("finds", "found"): ("mitsukeru", "mitsuketa"), ("sells", "sold"): ("uru", "utta"),
}
ADJECTIVES = {"big": "ookii", "small": "chiisai", "red": "akai", "old": "furui", "new": "atarashii",
              "blue": "aoi", "good": "yoi", "white": "shiroi"}
PLACES = {"park": "kouen", "school": "gakkou", "house": "ie", "station": "eki", "garden": "niwa"}
TIMES = {"yesterday": "kinou", "today": "kyou", "tomorrow": "ashita"}


def _np(rng: random.Random, lex: dict[str, str], max_adj: int) -> tuple[list[str], list[str]]:
    adjs = rng.sample(sorted(ADJECTIVES), rng.randint(0, max_adj))
    noun = rng.choice(sorted(lex))
    return ["the", *adjs, noun], [ADJECTIVES[a] for a in adjs] + [lex[noun]]


def _clause(rng: random.Random, max_adj: int) -> tuple[list[str], list[str]]:
    subj_en, subj_ja = _np(rng, NOUNS, max_adj)
    obj_en, obj_ja = _np(rng, OBJECTS, max_adj)
    (pres, past), (pres_ja, past_ja) = rng.choice(sorted(VERBS.items()))
    time = rng.choice([None, None, *sorted(TIMES)])
    is_past = time == "yesterday" or (time is None and rng.random() < 0.5)
    verb_en, verb_ja = (past, past_ja) if is_past else (pres, pres_ja)
    place = rng.choice(sorted(PLACES)) if rng.random() < 0.4 else None
    en = subj_en + [verb_en] + obj_en
    ja = subj_ja + ["wa"]
    if time:
        ja.append(TIMES[time])
    if place:
        en += ["in", "the", place]
        ja += [PLACES[place], "de"]
    if time:
        en.append(time)
    ja += obj_ja + ["o", verb_ja]
    return en, ja


def generate_svo_sov(n: int, seed: int = 0, max_clauses: int = 2, max_adj: int = 2,
                     exclude: set[str] | None = None) -> list[Pair]:
    """``n`` distinct English-like SVO sentences with their Japanese-like SOV translation.

    "the big dog ate the red apple in the park yesterday" ->
    "ookii inu wa kinou kouen de akai ringo o tabeta". Clauses are joined by "and" / "soshite".
    """
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list[Pair] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise InputError(f"could not generate {n} distinct sentences; lower n")
        k = rng.randint(1, max_clauses)
        en, ja = [], []
        for i in range(k):
            ce, cj = _clause(rng, max_adj)
            if i:
                en.append("and")
                ja += [",", "soshite"]
            en += ce
            ja += cj
        src, tgt = " ".join(en), " ".join(ja)
        if src in seen:
            continue
        seen.add(src)
        out.append(Pair(src, tgt))
    return out


TASK_TOKENIZER = {"dates": "char", "svo-sov": "word"}


def task_pairs(task: str, n_train: int, n_test: int, seed: int = 0, **kw: Any) -> tuple[list[Pair], list[Pair]]:
    """Train and held-out pairs of a generated task; held-out sources never occur in training."""
    gen = {"dates": generate_dates, "svo-sov": generate_svo_sov}.get(task)
    if gen is None:
        raise UnknownNameError("task", task, TASKS)
    train = gen(n_train, seed=seed, **kw)
    test = gen(n_test, seed=seed + 10_000, exclude={p.source for p in train}, **kw)
    return train, test


def split_pairs(pairs: list[Pair], test_fraction: float = 0.1, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Shuffle and split user pairs; a source that appears in both halves is kept in train only."""
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    n_test = max(1, round(test_fraction * len(pairs)))
    test = [pairs[i] for i in idx[:n_test]]
    train = [pairs[i] for i in idx[n_test:]]
    train_src = {p.source for p in train}
    test = [p for p in test if p.source not in train_src]
    if not train or not test:
        raise InputError(f"{len(pairs)} pairs are too few to split into train and held-out data")
    return train, test
