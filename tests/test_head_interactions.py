"""Pairwise head ablation: every effect against manual ablation runs done here by zeroing the heads' slices of
the output projection (no attnscope intervention involved), on a tiny random-init Llama."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from attnscope.errors import InputError

TEXTS = ["the cat sat on the mat", "a dog ran", "birds sing in the morning light"]


@pytest.fixture(scope="module")
def lm(tiny):
    return tiny("llama")


_CACHE: dict = {}


def _manual_effects(lm, zero: list[tuple[int, int]]) -> dict[str, float]:
    """Mean KL / loss increase of zeroing heads, by hand: each head's output is 0 exactly when its columns of
    o_proj are 0 (the head's probabilities times V feed only those columns). One text at a time, no padding."""
    key = frozenset(zero)
    if key in _CACHE:
        return _CACHE[key]
    if "base" not in _CACHE:
        with torch.no_grad():
            _CACHE["base"] = [torch.log_softmax(lm.model(**lm.tokenizer(t, return_tensors="pt")).logits[0, -1].double(),
                                                -1) for t in TEXTS]  # (V,) each
    model = copy.deepcopy(lm.model).eval()
    d = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer, head in zero:
            model.model.layers[layer].self_attn.o_proj.weight[:, head * d:(head + 1) * d] = 0.0
    kl, loss = [], []
    for t, base in zip(TEXTS, _CACHE["base"]):
        with torch.no_grad():
            new = torch.log_softmax(model(**lm.tokenizer(t, return_tensors="pt")).logits[0, -1].double(), -1)
        ref = int(base.argmax())
        kl.append(float((base.exp() * (base - new)).sum()))
        loss.append(float(base[ref] - new[ref]))
    _CACHE[key] = {"kl": float(np.mean(kl)), "loss_increase": float(np.mean(loss))}
    return _CACHE[key]


def test_interactions_match_manual_ablation(lm):
    from attnscope.attribution.ablation import head_importance, head_interactions

    single = head_importance(lm, TEXTS, method="ablation", batch_size=2)  # two batches, right padding
    for metric in ("kl", "loss_increase"):
        res = head_interactions(lm, TEXTS, k=3, metric=metric, single=single, batch_size=2)
        # the top 3 heads by |single effect|, by hand
        table = {(l, h): _manual_effects(lm, [(l, h)])[metric] for l in range(2) for h in range(4)}
        top = sorted(table, key=lambda x: -abs(table[x]))[:3]
        assert res.heads == top, metric
        for i, a in enumerate(res.heads):
            assert res.single[i] == pytest.approx(table[a], rel=1e-4, abs=1e-7)
            for j, b in enumerate(res.heads[i + 1:], start=i + 1):
                both = _manual_effects(lm, [a, b])[metric]
                assert res.pair[i, j] == pytest.approx(both, rel=1e-4, abs=1e-7)
                assert res.interaction[i, j] == pytest.approx(both - table[a] - table[b], rel=1e-3, abs=1e-6)
        np.testing.assert_allclose(res.interaction, res.interaction.T)
        np.testing.assert_allclose(np.diag(res.interaction), 0.0)
        assert np.abs(res.interaction).max() > 1e-6  # ablations of this model do not simply add up
        assert abs(res.rows()[0]["interaction"]) == pytest.approx(np.abs(res.interaction).max())  # largest first


def test_given_heads_without_single_scores(lm):
    from attnscope.attribution.ablation import head_interactions

    heads = [(0, 1), (1, 2)]
    res = head_interactions(lm, TEXTS, heads=heads, metric="kl")
    assert res.heads == heads and res.meta["selected_by"] == "given"
    ref_a, ref_b = _manual_effects(lm, [heads[0]])["kl"], _manual_effects(lm, [heads[1]])["kl"]
    both = _manual_effects(lm, heads)["kl"]
    assert res.single == pytest.approx([ref_a, ref_b], rel=1e-4)
    assert res.interaction[0, 1] == pytest.approx(both - ref_a - ref_b, rel=1e-3, abs=1e-6)


def test_bad_input(lm):
    from attnscope.attribution.ablation import head_importance, head_interactions

    with pytest.raises(InputError, match="k must be"):
        head_interactions(lm, TEXTS, k=1)
    with pytest.raises(InputError, match="k must be"):
        head_interactions(lm, TEXTS, k=9)  # the model has 8 heads
    with pytest.raises(InputError, match="heads must be"):
        head_interactions(lm, TEXTS, heads=[(0, 1), (0, 1)])
    with pytest.raises(InputError, match="heads must be"):
        head_interactions(lm, TEXTS, heads=[(0, 1), (5, 0)])
    with pytest.raises(InputError, match="ablation metric"):
        head_interactions(lm, TEXTS, k=2, metric="accuracy")
    grad = head_importance(lm, TEXTS[:1], method="gradient")
    with pytest.raises(InputError, match="same texts"):
        head_interactions(lm, TEXTS, k=2, single=grad)


def test_figure(lm, tmp_path):
    from attnscope.attribution.ablation import head_interactions
    from attnscope.attribution.plots import plot_head_interactions

    res = head_interactions(lm, TEXTS[:1], heads=[(0, 0), (0, 3), (1, 1)])
    assert plot_head_interactions(res, tmp_path / "i.png").stat().st_size > 0


def test_cli_ablate_interactions_needs_ablation(tmp_path, capsys):
    """Refused before any model is loaded (the full command is run for the docs figure)."""
    from attnscope.cli import main

    with pytest.raises(SystemExit) as e:
        main(["ablate", "-t", "A film.", "--method", "gradient", "--interactions", "3", "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--interactions needs the ablation method" in err, err
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit) as e:
        main(["ablate", "-t", "A film.", "--interactions", "99", "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--interactions must be 0 (off) or 2..16" in err, err
    with pytest.raises(SystemExit) as e:  # --zero measures given heads: --interactions would be silently ignored
        main(["ablate", "-t", "A film.", "--zero", "0:1", "--interactions", "3", "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "use one of them" in err and "\n" not in err.strip(), err
    assert not (tmp_path / "b").exists()
