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


# ---------------------------------------------------------------------------- encoder-decoders
@pytest.fixture(scope="module")
def one_layer_marian(bert_tokenizer):
    """A one-layer (encoder and decoder), two-head Marian in float64 with non-zero biases, LayerNorm shifts and
    final_logits_bias."""
    import transformers as tf

    from attnscope.models import wrap_model

    torch.manual_seed(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = tf.MarianConfig(vocab_size=bert_tokenizer.vocab_size, d_model=8, encoder_layers=1, decoder_layers=1,
                              encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=12,
                              decoder_ffn_dim=12, decoder_start_token_id=0, pad_token_id=0)
        model = tf.MarianMTModel(cfg).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            else:  # weights of the size of a trained model's (the init's 0.02 leaves the source almost unread)
                p.normal_(0.0, 0.4)
        model.final_logits_bias.add_(0.5 * torch.randn_like(model.final_logits_bias))
    return wrap_model(model, bert_tokenizer, name="one-layer-marian")


def _attn_hand(P, pre, xq, xkv, heads, causal):
    """Forward of one attention block (q from xq, k and v from xkv), every intermediate kept."""
    def lin(x, name):
        return x @ P[pre + name + ".weight"].T + P[pre + name + ".bias"]

    nq, d = xq.shape
    dh = d // heads
    c = {"xq": xq, "xkv": xkv, "q": lin(xq, "q_proj"), "k": lin(xkv, "k_proj"), "v": lin(xkv, "v_proj")}
    qh, kh, vh = (c[n].reshape(-1, heads, dh).transpose(1, 0, 2) for n in "qkv")  # (H, N, dh)
    s = qh @ kh.transpose(0, 2, 1) / math.sqrt(dh)  # (H, Nq, Nk)
    if causal:
        s = np.where(np.tril(np.ones(s.shape[1:], bool)), s, -1e30)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    c.update(qh=qh, kh=kh, vh=vh, p=p, o=(p @ vh).transpose(1, 0, 2).reshape(nq, d))
    c["a"] = lin(c["o"], "out_proj")
    return c


def _attn_back(P, pre, c, r_a, absorbed):
    """Explicit LRP back through one attention block: z-rule (out_proj, q/k/v projections; biases absorb),
    uniform rule on p·v and q·kᵀ, softmax rule. Returns (R at xq, R at xkv)."""
    absorbed["bias"] += (P[pre + "out_proj.bias"] * r_a / c["a"]).sum()
    r_o = _z(c["o"], P[pre + "out_proj.weight"], r_a, c["a"])
    heads, nq, dh = c["qh"].shape
    qh, kh, vh, p = c["qh"], c["kh"], c["vh"], c["p"]
    g_o = (r_o / c["o"]).reshape(nq, heads, dh).transpose(1, 0, 2)  # (H, Nq, dh)
    r_p = 0.5 * p * (g_o @ vh.transpose(0, 2, 1))  # (H, Nq, Nk)
    r_v = 0.5 * vh * (p.transpose(0, 2, 1) @ g_o)  # (H, Nk, dh)
    g_s = r_p - p * r_p.sum(-1, keepdims=True)  # softmax rule R_s = s ⊙ g_s
    r_q = 0.5 * qh * (g_s @ kh) / math.sqrt(dh)
    r_k = 0.5 * kh * (g_s.transpose(0, 2, 1) @ qh) / math.sqrt(dh)
    absorbed["softmax"] += r_o.sum() - (r_q.sum() + r_k.sum() + r_v.sum())
    r_xq, r_xkv = np.zeros_like(c["xq"]), np.zeros_like(c["xkv"])
    for name, r in (("q", r_q), ("k", r_k), ("v", r_v)):
        r = r.transpose(1, 0, 2).reshape(-1, heads * dh)
        absorbed["bias"] += (P[pre + f"{name}_proj.bias"] * r / c[name]).sum()
        x = c["xq"] if name == "q" else c["xkv"]
        rx = _z(x, P[pre + f"{name}_proj.weight"], r, c[name])
        if name == "q":
            r_xq += rx
        else:
            r_xkv += rx
    return r_xq, r_xkv


def hand_lrp_seq2seq(lm, src_ids, tgt_ids, target):
    """Relevance of the last decoder position's ``target`` logit of a one-layer Marian at the hidden states
    entering the encoder and the decoder layer, and the relevance biases, LayerNorm shifts and softmax absorb,
    every step written out (post-LN layers: self-attention, cross-attention, GELU feed-forward; tied LM head
    plus final_logits_bias)."""
    m = lm.model
    P = {k: v.detach().numpy() for k, v in m.named_parameters()}
    flb = m.final_logits_bias.detach().numpy()[0]
    E, D = "model.encoder.layers.0.", "model.decoder.layers.0."
    H = m.config.encoder_attention_heads
    with torch.no_grad():
        o = m(input_ids=src_ids, decoder_input_ids=tgt_ids, output_hidden_states=True)
    x0, y0 = o.encoder_hidden_states[0][0].numpy(), o.decoder_hidden_states[0][0].numpy()  # (S, d), (T, d)
    erf = np.vectorize(math.erf)
    absorbed = {"bias": 0.0, "norm": 0.0, "softmax": 0.0}

    def lin(x, name):
        return x @ P[name + ".weight"].T + P[name + ".bias"]

    def ln(x, name):
        xc = x - x.mean(-1, keepdims=True)
        return xc / np.sqrt((xc ** 2).mean(-1, keepdims=True) + 1e-5) * P[name + ".weight"] + P[name + ".bias"]

    def ln_back(x, y, name, r_y):
        absorbed["norm"] += (P[name + ".bias"] * r_y / y).sum()
        return _ln_back(x, y, P[name + ".weight"], 1e-5, r_y)

    def ffn(pre, h):
        z = lin(h, pre + "fc1")
        g = 0.5 * z * (1 + erf(z / math.sqrt(2)))
        return z, g, lin(g, pre + "fc2")

    def ffn_back(pre, h, z, g, m2, r_m2):
        absorbed["bias"] += (P[pre + "fc2.bias"] * r_m2 / m2).sum()
        r_z = _z(g, P[pre + "fc2.weight"], r_m2, m2)  # GELU: identity rule
        absorbed["bias"] += (P[pre + "fc1.bias"] * r_z / z).sum()
        return _z(h, P[pre + "fc1.weight"], r_z, z)

    # forward: encoder
    ea = _attn_hand(P, E + "self_attn.", x0, x0, H, False)
    x1 = ea["a"] + x0
    h1 = ln(x1, E + "self_attn_layer_norm")
    ez, eg, em = ffn(E, h1)
    x2 = em + h1
    enc = ln(x2, E + "final_layer_norm")
    # forward: decoder
    sa = _attn_hand(P, D + "self_attn.", y0, y0, H, True)
    u1 = sa["a"] + y0
    k1 = ln(u1, D + "self_attn_layer_norm")
    ca = _attn_hand(P, D + "encoder_attn.", k1, enc, H, False)
    u2 = ca["a"] + k1
    k2 = ln(u2, D + "encoder_attn_layer_norm")
    dz, dg, dm = ffn(D, k2)
    u3 = dm + k2
    k3 = ln(u3, D + "final_layer_norm")
    logits = k3[-1] @ P["model.shared.weight"].T + flb
    # backward: the z-rule through the tied head (final_logits_bias absorbs its entry)
    absorbed["bias"] += flb[target]
    r_k3 = np.zeros_like(k3)
    r_k3[-1] = k3[-1] * P["model.shared.weight"][target]
    r_u3 = ln_back(u3, k3, D + "final_layer_norm", r_k3)
    r_dm, r_k2 = dm / u3 * r_u3, k2 / u3 * r_u3  # residual sum: z-rule
    r_k2 = r_k2 + ffn_back(D, k2, dz, dg, dm, r_dm)
    r_u2 = ln_back(u2, k2, D + "encoder_attn_layer_norm", r_k2)
    r_ca, r_k1 = ca["a"] / u2 * r_u2, k1 / u2 * r_u2
    r_q, r_enc = _attn_back(P, D + "encoder_attn.", ca, r_ca, absorbed)
    r_k1 = r_k1 + r_q
    r_u1 = ln_back(u1, k1, D + "self_attn_layer_norm", r_k1)
    r_sa, r_y0 = sa["a"] / u1 * r_u1, y0 / u1 * r_u1
    r_q, r_kv = _attn_back(P, D + "self_attn.", sa, r_sa, absorbed)
    r_y0 = r_y0 + r_q + r_kv
    # backward: encoder, from what cross-attention's keys and values carried
    r_x2 = ln_back(x2, enc, E + "final_layer_norm", r_enc)
    r_em, r_h1 = em / x2 * r_x2, h1 / x2 * r_x2
    r_h1 = r_h1 + ffn_back(E, h1, ez, eg, em, r_em)
    r_x1 = ln_back(x1, h1, E + "self_attn_layer_norm", r_h1)
    r_ea, r_x0 = ea["a"] / x1 * r_x1, x0 / x1 * r_x1
    r_q, r_kv = _attn_back(P, E + "self_attn.", ea, r_ea, absorbed)
    r_x0 = r_x0 + r_q + r_kv
    return r_x0.sum(-1), r_y0.sum(-1), float(logits[target]), absorbed


def test_attnlrp_seq2seq_matches_hand_propagation(one_layer_marian):
    """Relevance of a decoder logit reaches the source (through cross-attention and the encoder) and the target
    prefix, equal to the explicit propagation; biases (final_logits_bias included), LayerNorm shifts and the
    softmax absorb what the hand computation says, and the identity closes."""
    from attnscope.attribution.attnlrp import seq2seq_relevance

    enc = one_layer_marian.tokenizer("the cat sat on the mat", return_tensors="pt")
    src = enc["input_ids"]
    tgt = torch.tensor([[0, 2023, 4937, 2006]])
    r_src, r_tgt, logits, t, c = seq2seq_relevance(one_layer_marian, {"input_ids": src, "decoder_input_ids": tgt},
                                                   target=1996)
    want_src, want_tgt, logit, absorbed = hand_lrp_seq2seq(one_layer_marian, src, tgt, 1996)
    assert float(logits[t]) == pytest.approx(logit, rel=1e-9) and t == 1996
    np.testing.assert_allclose(r_src.sum(-1).numpy(), want_src, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(r_tgt.sum(-1).numpy(), want_tgt, rtol=1e-6, atol=1e-9)
    assert c.ok and c.input_relevance == pytest.approx(want_src.sum() + want_tgt.sum(), rel=1e-9)
    for k in absorbed:
        assert c.absorbed[k] == pytest.approx(absorbed[k], rel=1e-6, abs=1e-9), k
    assert abs(want_src).sum() > 1e-3 * abs(logit) and abs(absorbed["bias"]) > 1e-3 * abs(logit)
    assert c.input_relevance + sum(c.absorbed.values()) == pytest.approx(logit, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("family", ["marian", "t5_gated"])
def test_attnlrp_seq2seq_conserves(tiny, bert_tokenizer, family):
    """Two-layer encoder-decoders: Marian with biases and final_logits_bias that absorb, and T5 v1.1's gated
    feed-forward (wi_0, wi_1: the uniform rule on the product) with its relative position bias measured."""
    import copy

    import transformers as tf

    from attnscope.attribution.attnlrp import seq2seq_relevance
    from attnscope.models import wrap_model

    torch.manual_seed(5)
    if family == "marian":
        model = copy.deepcopy(tiny("marian").model)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.add_(0.2 * torch.randn_like(p))
            model.final_logits_bias.add_(0.5 * torch.randn_like(model.final_logits_bias))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tf.T5ForConditionalGeneration(tf.T5Config(
                vocab_size=bert_tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                decoder_start_token_id=0, pad_token_id=0, feed_forward_proj="gated-gelu")).eval()
    lm = wrap_model(model, bert_tokenizer, name=f"tiny-{family}")
    src = bert_tokenizer("the cat sat on the mat", return_tensors="pt")["input_ids"]
    s, g, logits, t, c = seq2seq_relevance(lm, {"input_ids": src, "decoder_input_ids": torch.tensor([[0, 2023, 4937]])})
    assert c.ok, c
    assert float(s.sum() + g.sum()) == pytest.approx(c.input_relevance, rel=1e-9)
    assert c.input_relevance + sum(c.absorbed.values()) == pytest.approx(float(logits[t]), rel=1e-4, abs=1e-5)
    if family == "marian":
        assert abs(c.absorbed["bias"]) > 1e-3 * abs(float(logits[t]))
        from attnscope.errors import InputError

        with pytest.raises(InputError, match="seq2seq_attribution"):  # the single-text API says where to go
            attnlrp_attribution(lm, "the cat sat on the mat")
    else:
        assert c.absorbed["position_bias"] != 0 and c.absorbed["bias"] == 0
