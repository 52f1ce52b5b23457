"""Faithfulness benchmark: the metrics against hand computations on a model whose output depends on one
token only, the statistics against independent references, the per-example curves against a direct
recomputation, the not-applicable / flagged mechanisms, the CLI's errors and one small CLI run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnscope.attribution import aopc
from attnscope.attribution import faithfulness_benchmark as fb
from attnscope.errors import InputError

KEY = 7  # the one token the toy model reads


class OneTokenOracle:
    """p(target) = 0.9 while token id KEY is in the input, 0.1 once it is replaced: a model whose output
    depends on one token only."""

    def __call__(self, rows):
        return np.array([0.9 if KEY in r else 0.1 for r in rows])


def toy(n=10, key_at=3):
    ids = np.arange(100, 100 + n + 2)
    ids[key_at] = KEY
    cand = np.arange(1, n + 1)  # positions 0 and n+1 play [CLS]/[SEP]: never removed
    return aopc.Perturbation(ids=ids, candidates=cand, base_id=0, target=1, p_full=0.9, oracle=OneTokenOracle())


def test_perfect_and_worst_attribution_by_hand():
    p = toy()
    perfect = np.zeros(12)
    perfect[3] = 1.0  # the key token first
    worst = np.ones(12)
    worst[3] = -1.0  # the key token last
    fr = aopc.ERASER_FRACTIONS  # 10 removable tokens: top-k sizes 1, 1, 1, 2, 5
    good = p.measure(p.requests(perfect, steps=10, fractions=fr))
    bad = p.measure(p.requests(worst, steps=10, fractions=fr))
    # deletion: p = 0.9 before the key goes, 0.1 after; AOPC = mean over the 11 points of 0.9 - p
    np.testing.assert_allclose(good["deletion_curve"], [0.9] + [0.1] * 10)
    assert good["aopc_deletion"] == pytest.approx(10 * 0.8 / 11)
    np.testing.assert_allclose(bad["deletion_curve"], [0.9] * 10 + [0.1])
    assert bad["aopc_deletion"] == pytest.approx(0.8 / 11)
    # insertion starts from everything removed (0.1) and restores the key first (perfect) or last (worst)
    assert good["aopc_insertion"] == pytest.approx(10 * 0.8 / 11)
    assert bad["aopc_insertion"] == pytest.approx(0.8 / 11)
    # ERASER: removing the key loses 0.8 (comprehensiveness); keeping only it loses nothing (sufficiency)
    np.testing.assert_allclose(good["comprehensiveness"], [0.8] * 5)
    np.testing.assert_allclose(good["sufficiency"], [0.0] * 5, atol=1e-12)
    np.testing.assert_allclose(bad["comprehensiveness"], [0.0] * 5, atol=1e-12)
    np.testing.assert_allclose(bad["sufficiency"], [0.8] * 5)
    assert good["comprehensiveness_aopc"] == pytest.approx(0.8) and bad["sufficiency_aopc"] == pytest.approx(0.8)
    # leave-one-out: only the key matters
    np.testing.assert_allclose(p.leave_one_out(), np.where(np.arange(12) == 3, 0.8, 0.0))


def test_counts_and_special_tokens_never_removed():
    np.testing.assert_array_equal(aopc.eraser_counts(10), [1, 1, 1, 2, 5])
    np.testing.assert_array_equal(aopc.eraser_counts(3), [1, 1, 1, 1, 2])  # at least one token, ceil(f * n)
    np.testing.assert_array_equal(aopc.curve_counts(4, 4), [0, 1, 2, 3, 4])
    p = toy()
    rows = p.requests(np.arange(12.0), steps=10, fractions=aopc.ERASER_FRACTIONS)
    for kind in rows.values():
        for r in kind:
            assert r[0] == 100 and r[-1] == 111  # [CLS]/[SEP] stand-ins kept
    with pytest.raises(InputError):
        p.requests(np.zeros(3), steps=10, fractions=aopc.ERASER_FRACTIONS)


def test_bootstrap_covers_a_known_mean_and_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(1)
    covered = 0
    for i in range(60):
        x = rng.normal(0.3, 1.0, 40)
        lo, hi = fb.bootstrap_ci(x, n_boot=400, seed=i)
        covered += lo <= 0.3 <= hi
    assert 50 <= covered <= 60  # nominal 95 %: 57 of 60
    x = rng.exponential(1.0, 200)
    lo, hi = fb.bootstrap_ci(x, n_boot=3000, seed=0)
    ref = stats.bootstrap((x,), np.mean, n_resamples=3000, method="percentile", rng=np.random.default_rng(5))
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.03)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.03)
    assert all(np.isnan(fb.bootstrap_ci(np.array([1.0]))))


def test_holm_and_paired_test():
    np.testing.assert_allclose(fb.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])  # by hand
    assert np.isnan(fb.holm([np.nan, 0.01])[0]) and fb.holm([np.nan, 0.01])[1] == pytest.approx(0.01)
    a = np.arange(20.0)
    assert fb.paired_test(a, a) == 1.0 and np.isnan(fb.paired_test(a[:4], a[:4] + 1))
    assert fb.paired_test(a + 1 + 0.01 * a, a) < 0.001


@pytest.fixture(scope="module")
def clf():
    from attnscope.attribution.testing import tiny_model

    return tiny_model("bert", num_labels=2, seed=3)


TEXTS = ["A wonderful film with great acting.", "Terrible plot and boring dialogue.", "It was fine, I guess.",
         "The cat sat on the mat today.", "Nothing works and nobody cares.", "Loved every minute of it!"]


def test_benchmark_curves_match_a_direct_recomputation(clf, monkeypatch):
    from attnscope.attribution import explanation

    real = explanation.explain

    def flag_rollout(lm, text, methods, **kw):  # rollout "fails its check": it must be flagged, not scored
        e = real(lm, text, methods, **kw)
        if methods == ["rollout"]:
            e.meta["checks"] = {"rollout": {"check": "completeness", "ok": False}}
        return e

    monkeypatch.setattr(explanation, "explain", flag_rollout)
    monkeypatch.setattr(explanation, "ALL_METHODS", tuple(explanation.ALL_METHODS) + ("nosuch",))
    r = fb.benchmark_faithfulness(clf, TEXTS[:3], ["attention", "rollout", "nosuch"], steps=4, n_boot=200,
                                  allow_random_head=True)
    assert r.status["nosuch"].startswith("not applicable")
    assert r.status["random"] == r.status["attention"] == "ok"
    roll = next(s for s in r.summary if s["method"] == "rollout")
    assert roll["flagged"] == 3 and roll["n"] == 0 and "completeness" in roll["flag"]
    assert "rollout failed its own check" in r.verdict and "⚠" in r.table_markdown()
    # one example's attention deletion curve, recomputed with plain forwards of the model
    row = next(x for x in r.rows if x["method"] == "attention" and x["example"] == 1)
    e = real(clf, TEXTS[1], ["attention"], allow_random_head=True)
    enc = clf.tokenizer(TEXTS[1], return_tensors="pt")
    ids = enc["input_ids"][0]
    with torch.no_grad():
        p0 = torch.softmax(clf.model(**enc).logits[0].double(), -1)
    t = int(p0.argmax())
    cand = [i for i in range(len(ids)) if i not in (0, len(ids) - 1)]
    order = sorted(cand, key=lambda i: (-e.scores["attention"][i], i))
    curve = []
    for j in range(5):
        x = ids.clone()
        x[order[:round(j / 4 * len(cand))]] = clf.tokenizer.pad_token_id
        with torch.no_grad():
            curve.append(float(torch.softmax(clf.model(input_ids=x[None], token_type_ids=enc["token_type_ids"],
                                                       attention_mask=enc["attention_mask"]).logits[0].double(), -1)[t]))
    np.testing.assert_allclose(row["deletion_curve"], curve, rtol=1e-5, atol=1e-7)
    assert row["aopc_deletion"] == pytest.approx(np.mean(curve[0] - np.array(curve)), abs=1e-6)


def _save_tiny(clf, path):
    clf.model.save_pretrained(str(path))
    clf.tokenizer.save_pretrained(str(path))
    return path


def test_cli_errors_and_a_small_run(clf, tmp_path, capsys):
    from attnscope.cli import main

    data = tmp_path / "t.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    model = _save_tiny(clf, tmp_path / "m")
    capsys.readouterr()
    base = ["faithfulness", "-m", str(model), "-d", str(data), "-o", str(tmp_path / "o")]
    for extra, needle in ((["--n", "0"], "--n must be between 1"), (["--n", "100000"], "--n must be between"),
                          (["--steps", "1000"], "--steps"), (["--methods", "nosuch"], "nosuch"),
                          (["--replacement", "zero"], "--replacement"), (["--bootstrap", "5"], "--bootstrap")):
        with pytest.raises(SystemExit) as e:
            main(base + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as e:
        main(["faithfulness", "-m", str(model), "-d", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o")])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(base + ["--methods", "attention", "--n", "4", "--steps", "3", "--bootstrap", "100", "--quiet"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Verdict" in out and "attention" in out.split("Verdict")[0]
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "o" / "scores.parquet").to_pylist()
    assert len(t) == 8 and {x["method"] for x in t} == {"random", "attention"}
    assert all(len(x["deletion_curve"]) == 4 for x in t)
    table = (tmp_path / "o" / "table.md").read_text()
    assert "| random |" in table and "| attention |" in table and "Holm" in table
    assert (tmp_path / "o" / "curves.png").stat().st_size > 10_000
    again = fb.load_result(tmp_path / "o")  # re-summarised from the files
    assert again.meta["n_examples"] == 4 and [s["n"] for s in again.summary] == [4, 4]


def test_resume_equals_an_uninterrupted_run(clf, tmp_path, capsys):
    """A run stopped after 2 examples and resumed gives the rows of one run over all 4 (times excepted);
    the CLI refuses to replace results without --resume/--overwrite and refuses a resume that differs."""
    kw = dict(steps=3, n_boot=100, allow_random_head=True)
    full = fb.benchmark_faithfulness(clf, TEXTS[:4], ["attention"], **kw)
    fb.benchmark_faithfulness(clf, TEXTS[:2], ["attention"], **kw).save(tmp_path / "half")
    resumed = fb.benchmark_faithfulness(clf, TEXTS[:4], ["attention"], resume=fb.load_result(tmp_path / "half"), **kw)
    metrics = [k for k in full.rows[0] if k not in ("runtime_s", "deletion_curve", "insertion_curve")]
    assert [[r[k] for k in metrics] for r in resumed.rows] == [[r[k] for k in metrics] for r in full.rows]
    assert resumed.meta["n_examples"] == 4 and [s["tried"] for s in resumed.summary] == [4, 4]
    with pytest.raises(InputError, match="example 0 of the run to resume"):
        fb.benchmark_faithfulness(clf, TEXTS[2:6], ["attention"], resume=fb.load_result(tmp_path / "half"), **kw)
    with pytest.raises(InputError, match="steps=3"):
        fb.benchmark_faithfulness(clf, TEXTS[:4], ["attention"], resume=fb.load_result(tmp_path / "half"),
                                  **{**kw, "steps": 5})

    from attnscope.cli import main

    data = tmp_path / "t.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    model = _save_tiny(clf, tmp_path / "m")
    base = ["faithfulness", "-m", str(model), "-d", str(data), "-o", str(tmp_path / "o"), "--methods", "attention",
            "--steps", "3", "--bootstrap", "100", "--quiet"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(base + ["--n", "2"])
    assert e.value.code == 0
    for extra, needle in (([], "--resume"), (["--resume", "--steps", "4"], "steps=3"),
                          (["--resume", "--overwrite"], "exclude each other")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(base + ["--n", "3"] + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as e:
        main(base + ["--n", "3", "--resume"])
    assert e.value.code == 0 and fb.load_result(tmp_path / "o").meta["n_examples"] == 3
