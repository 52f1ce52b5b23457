"""Perturbation robustness (attnscope.attribution.robustness): divergences against scipy, zero noise gives
exactly zero divergence, divergence grows with the noise scale (averaged over seeds), the noise intervention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from attnscope.attribution.interventions import Site
from attnscope.attribution.robustness import AttentionNoise, perturbation_robustness as robustness, row_js, row_kl
from attnscope.errors import InputError

TEXT = "the cat sat on the mat and the dog sat on the log"


def test_divergences_match_scipy():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=5)
    q = rng.dirichlet(np.ones(7), size=5)
    q[:, 2] = 0.0  # zeros in the perturbed row: 0 log 0 = 0
    q /= q.sum(-1, keepdims=True)
    p[0, 4] = 0.0
    p[0] /= p[0].sum()
    kl = row_kl(q, p)
    ref_kl = rel_entr(q, p).sum(-1)  # inf where q > 0 = p
    assert np.isinf(kl[0]) and np.isinf(ref_kl[0])
    np.testing.assert_allclose(kl[1:], ref_kl[1:], rtol=1e-12, atol=1e-15)
    ref_js = np.array([jensenshannon(a, b) ** 2 for a, b in zip(p, q)])  # scipy: the distance, natural log
    np.testing.assert_allclose(row_js(p, q), ref_js, rtol=1e-9, atol=1e-15)
    assert (row_js(p, q) <= math.log(2) + 1e-12).all()


def test_attention_noise_keeps_rows_distributions():
    probs = torch.softmax(torch.randn(1, 3, 4, 6), -1)
    probs[..., 5] = 0.0  # a masked key
    probs = probs / probs.sum(-1, keepdim=True)
    for kind in ("gaussian", "multiplicative"):
        iv = AttentionNoise(kind, 0.5, torch.Generator().manual_seed(1))
        out = iv.apply(Site("self", 0), probs, torch.arange(4))
        assert (out >= 0).all() and (out[..., 5] == 0).all()  # never weight on a key the clean head did not weigh
        torch.testing.assert_close(out.sum(-1), torch.ones(1, 3, 4))
        assert not torch.equal(out, probs)
    assert not AttentionNoise("gaussian", 0.0).applies(Site("self", 0))  # zero noise never leaves SDPA


@pytest.fixture(scope="module")
def bert(tiny):
    return tiny("bert")


@pytest.fixture(scope="module")
def llama(tiny):
    return tiny("llama")


@pytest.mark.parametrize("target,kind", [("embeddings", "gaussian"), ("embeddings", "multiplicative"),
                                         ("attention", "gaussian"), ("attention", "multiplicative")])
def test_zero_noise_gives_zero_divergence_exactly(bert, target, kind):
    r = robustness(bert, TEXT, scales=[0.0, 0.3], n_seeds=2, kind=kind, target=target)
    assert r.js_mean.shape == (2, 2, 4) and r.kl_mean.shape == (2, 2, 4)
    assert (r.js_mean[0] == 0).all() and (r.kl_mean[0] == 0).all() and (r.js_std[0] == 0).all()
    assert (r.prediction["hidden_change"][0] == 0).all()
    assert (r.js_mean[1] > 0).all()  # the non-zero scale moves every head


def test_divergence_grows_with_scale_over_seeds(bert, llama):
    scales = [0.01, 0.1, 1.0]  # a decade apart: the seed-averaged divergence grows by far more than its spread
    for lm, target in ((bert, "embeddings"), (llama, "attention")):
        r = robustness(lm, TEXT, scales=scales, n_seeds=4, target=target, kind="gaussian")
        js = r.js_mean.mean((1, 2))  # mean over heads
        kl = r.kl_mean.mean((1, 2))
        assert js[0] < js[1] < js[2], (target, js)
        assert kl[0] < kl[1] < kl[2], (target, kl)
        # the robustness score is 1 - mean over the scales of JS / ln 2 (computed here from the reported JS)
        np.testing.assert_allclose(r.score, 1 - r.js_mean.mean(0) / math.log(2), rtol=1e-12)
    pred = r.prediction["kl"][:, 0]  # the llama has an LM head: the prediction's KL grows too
    assert pred[0] < pred[2] and "flip_rate" in r.prediction
    d = r.to_dict()
    assert d["prediction_metric"] == "kl" and len(d["js_mean"]) == 3


@pytest.mark.parametrize("kwargs,match", [({"scales": [-0.1]}, "scales"), ({"scales": []}, "scales"),
                                          ({"scales": [1e9]}, "scales"), ({"kind": "uniform"}, "kind"),
                                          ({"target": "weights"}, "target"), ({"n_seeds": 0}, "n_seeds")])
def test_bad_input(bert, kwargs, match):
    with pytest.raises(InputError, match=match):
        robustness(bert, TEXT, **kwargs)
