"""AttnLRP (attnscope.attribution.attnlrp) against relevance propagated by hand, layer by layer, with the
explicit LRP formulas of Achtibat et al. 2024 (z-rule for linear layers and residual sums, identity rule for
norms and activations, softmax rule, uniform rule for q·kᵀ and p·v); conservation on BERT- and
Llama-family models; a model with an operation that has no rule fails the check loudly."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from attnscope.attribution.attnlrp import attnlrp_attribution


@pytest.fixture(scope="module")
def one_layer_bert(bert_tokenizer):
    """A one-layer, two-head BERT classifier in float64 with non-zero biases and LayerNorm shifts."""
    import transformers as tf

    from attnscope.models import wrap_model

    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = tf.BertConfig(vocab_size=bert_tokenizer.vocab_size, hidden_size=8, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=12, num_labels=2)
        model = tf.BertForSequenceClassification(cfg).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return wrap_model(model, bert_tokenizer, name="one-layer-bert")


def _z(x, w, r_out, z):
    """z-rule through z = x Wᵀ + b: R_x[j] = x_j Σ_i W_ij R_i / z_i (rows of x independent)."""
    return x * ((r_out / z) @ w)


def _ln_back(x, y, w, eps, r_y):
    """Identity rule through LayerNorm (σ constant, β absorbs), then the linear mean subtraction."""
    xc = x - x.mean(-1, keepdims=True)
    lin = xc / np.sqrt((xc ** 2).mean(-1, keepdims=True) + eps) * w
    r_xc = lin / y * r_y
    r = r_xc / xc
    return x * (r - r.mean(-1, keepdims=True))


def hand_lrp(lm, ids: torch.Tensor, target: int):
    """Relevance of each token (hidden states entering layer 0) of a one-layer BERT classifier, and the
    relevance absorbed by linear biases and by the attention softmax — every step written out."""
    m = lm.model
    P = {k: v.detach().numpy() for k, v in m.named_parameters()}
    L = "bert.encoder.layer.0."
    with torch.no_grad():
        h0 = m.bert.embeddings(input_ids=ids)[0].numpy()  # (N, D)
    n, d = h0.shape
    H = m.config.num_attention_heads
    dh = d // H
    erf = np.vectorize(math.erf)

    def lin(x, name):
        return x @ P[name + ".weight"].T + P[name + ".bias"]

    def ln(x, name):
        xc = x - x.mean(-1, keepdims=True)
        return xc / np.sqrt((xc ** 2).mean(-1, keepdims=True) + 1e-12) * P[name + ".weight"] + P[name + ".bias"]

    # forward
    q, k, v = (lin(h0, L + f"attention.self.{w}") for w in ("query", "key", "value"))
    qh, kh, vh = (t.reshape(n, H, dh).transpose(1, 0, 2) for t in (q, k, v))  # (H, N, dh)
    s = qh @ kh.transpose(0, 2, 1) / math.sqrt(dh)  # (H, N, N)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    oh = p @ vh  # (H, N, dh)
    o = oh.transpose(1, 0, 2).reshape(n, d)
    a = lin(o, L + "attention.output.dense")
    x1 = a + h0
    h1 = ln(x1, L + "attention.output.LayerNorm")
    z = lin(h1, L + "intermediate.dense")
    g = 0.5 * z * (1 + erf(z / math.sqrt(2)))
    m2 = lin(g, L + "output.dense")
    x2 = m2 + h1
    h2 = ln(x2, L + "output.LayerNorm")
    pz = lin(h2[0], "bert.pooler.dense")
    pt = np.tanh(pz)
    y = lin(pt, "classifier")
    bias = {}

    # backward, explicit LRP
    r_y = np.zeros_like(y)
    r_y[target] = y[target]
    bias["classifier"] = P["classifier.bias"][target]
    r_pt = _z(pt, P["classifier.weight"], r_y, np.where(r_y != 0, y, 1.0))
    r_pz = r_pt  # tanh: identity rule
    bias["pooler"] = (P["bert.pooler.dense.bias"] * r_pz / pz).sum()
    r_h2 = np.zeros_like(h2)
    r_h2[0] = _z(h2[0], P["bert.pooler.dense.weight"], r_pz, pz)
    r_x2 = _ln_back(x2, h2, P[L + "output.LayerNorm.weight"], 1e-12, r_h2)
    r_m2, r_h1 = m2 / x2 * r_x2, h1 / x2 * r_x2  # residual sum: z-rule
    bias["out"] = (P[L + "output.dense.bias"] * r_m2 / m2).sum()
    r_g = _z(g, P[L + "output.dense.weight"], r_m2, m2)
    r_z = r_g  # GELU: identity rule
    bias["inter"] = (P[L + "intermediate.dense.bias"] * r_z / z).sum()
    r_h1 = r_h1 + _z(h1, P[L + "intermediate.dense.weight"], r_z, z)
    r_x1 = _ln_back(x1, h1, P[L + "attention.output.LayerNorm.weight"], 1e-12, r_h1)
    r_a, r_h0 = a / x1 * r_x1, h0 / x1 * r_x1
    bias["attn_out"] = (P[L + "attention.output.dense.bias"] * r_a / a).sum()
    r_o = _z(o, P[L + "attention.output.dense.weight"], r_a, a)
    ratio = (r_o / o).reshape(n, H, dh).transpose(1, 0, 2)  # (H, N, dh)
    r_p = 0.5 * p * (ratio @ vh.transpose(0, 2, 1))  # (H, Nq, Nk): uniform rule on p·v
    r_v = 0.5 * vh * (p.transpose(0, 2, 1) @ ratio)  # (H, Nk, dh)
    r_s = s * (r_p - p * r_p.sum(-1, keepdims=True))  # softmax rule
    r_q = 0.5 * qh * ((r_s / s) @ kh) / math.sqrt(dh)  # uniform rule on q·kᵀ
    r_k = 0.5 * kh * ((r_s / s).transpose(0, 2, 1) @ qh) / math.sqrt(dh)
    softmax = r_o.sum() - (r_q.sum() + r_k.sum() + r_v.sum())
    for name, r in (("query", r_q), ("key", r_k), ("value", r_v)):
        r = r.transpose(1, 0, 2).reshape(n, d)
        zz = {"query": q, "key": k, "value": v}[name]
        bias[name] = (P[L + f"attention.self.{name}.bias"] * r / zz).sum()
        r_h0 = r_h0 + _z(h0, P[L + f"attention.self.{name}.weight"], r, zz)
    return r_h0.sum(-1), float(y[target]), sum(bias.values()), float(softmax)


def test_attnlrp_matches_hand_propagation(one_layer_bert):
    from attnscope.attribution.interventions import encode

    text = "the film was not bad at all"
    inputs, _ = encode(one_layer_bert, text)
    res = attnlrp_attribution(one_layer_bert, text, target=1, allow_random_head=True)
    want, logit, bias, softmax = hand_lrp(one_layer_bert, inputs["input_ids"], 1)
    assert res.logit == pytest.approx(logit, rel=1e-9)
    np.testing.assert_allclose(res.scores, want, rtol=1e-6, atol=1e-9)
    c = res.conservation
    assert c.ok and c.absorbed["bias"] == pytest.approx(bias, rel=1e-6, abs=1e-9)
    assert c.absorbed["softmax"] == pytest.approx(softmax, rel=1e-6, abs=1e-9)
    # the biases and LayerNorm shifts here absorb a real share: the identity is not trivially Σ R = logit
    assert abs(c.absorbed["bias"]) + abs(c.absorbed["norm"]) > 1e-3 * abs(logit)
    assert c.input_relevance + sum(c.absorbed.values()) == pytest.approx(logit, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("family", ["llama", "bert_classifier", "gpt2"])
def test_attnlrp_conserves_on_both_families(tiny, bert_tokenizer, family):
    import copy

    import transformers as tf

    from attnscope.models import wrap_model

    if family == "llama":
        lm = tiny("llama")  # grouped-query attention, RMSNorm, gated SiLU MLP, RoPE
    elif family == "gpt2":  # GPT-2's Conv1D layers, with biases that absorb relevance
        model = copy.deepcopy(tiny("gpt2").model)
        torch.manual_seed(2)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.add_(0.2 * torch.randn_like(p))
        lm = wrap_model(model, bert_tokenizer, name="tiny-gpt2-biased")
    else:
        torch.manual_seed(1)
        cfg = tf.BertConfig(vocab_size=bert_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=37)
        lm = wrap_model(tf.BertForSequenceClassification(cfg).eval(), bert_tokenizer, name="tiny-bert-cls")
    res = attnlrp_attribution(lm, "the cat sat on the mat", allow_random_head=True)
    c = res.conservation
    assert c.ok, c
    assert res.scores.sum() == pytest.approx(c.input_relevance, rel=1e-6)
    assert c.input_relevance + sum(c.absorbed.values()) == pytest.approx(res.logit, rel=1e-4, abs=1e-5)
    assert not [w for w in res.warnings if "CONSERVATION" in w]
    if family == "gpt2":
        assert abs(c.absorbed["bias"]) > 1e-3 * abs(res.logit)


def test_unruled_operation_fails_loudly(tiny, bert_tokenizer):
    """A model with a final normalisation the rules do not know (x·‖x‖: gradient × input doubles its
    relevance) leaves a residual: the result is flagged, not presented as AttnLRP."""
    import copy

    from attnscope.models import wrap_model

    class ScaleByNorm(torch.nn.Module):
        def forward(self, x):
            return x * x.norm(dim=-1, keepdim=True)

    bad = copy.deepcopy(tiny("llama").model)
    bad.model.norm = ScaleByNorm()
    bad_lm = wrap_model(bad, bert_tokenizer, name="tiny-llama-unruled")
    res = attnlrp_attribution(bad_lm, "the cat sat on the mat")
    assert not res.conservation.ok
    assert any("ATTNLRP CONSERVATION FAILED" in w for w in res.warnings)

    # in explain: flagged, kept out of the agreement rows, its note and check shown
    from attnscope.attribution import explain

    methods = ["attention", "rollout", "attnlrp"]
    e = explain(bad_lm, "the cat sat on the mat", methods)
    assert e.failed_checks == ["attnlrp"] and e.checks["attnlrp"] == {"check": "conservation", "ok": False}
    assert all("attnlrp" not in (r["a"], r["b"]) for r in e.agreement) and e.agreement
    assert any("ATTNLRP CONSERVATION FAILED" in w for w in e.warnings)
    good = explain(tiny("llama"), "the cat sat on the mat", methods)
    assert good.failed_checks == [] and any(r["b"] == "attnlrp" for r in good.agreement)
    assert good.to_dict()["notes"]["attnlrp"].startswith("Layer-wise relevance") and set(good.notes) == set(methods)


def test_method_notes_table_is_in_the_docs():
    from pathlib import Path

    from attnscope.attribution.method_notes import markdown_table

    docs = (Path(__file__).parents[1] / "docs" / "attribution.md").read_text(encoding="utf-8")
    assert markdown_table() in docs
