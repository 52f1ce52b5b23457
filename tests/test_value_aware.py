"""Value-aware attributions (norm-based attention, attention-block mixing, GlobEnc, ALTI, ALTI-Logit, value
zeroing) against independent computations written here from the papers' formulas: one layer recomputed by hand
from the model's own weights and the hidden states of a plain SDPA forward (``output_hidden_states``), never
through attnscope's attention function."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnscope.attribution.alti import alti_attribution
from attnscope.attribution.alti_logit import alti_logit_attribution
from attnscope.attribution.block_mixing import attention_block_mixing
from attnscope.attribution.explanation import ALL_METHODS, explain, methods_for
from attnscope.attribution.globenc import globenc_attribution
from attnscope.attribution.interventions import encode
from attnscope.attribution.testing import tiny_model
from attnscope.attribution.value_norms import norm_attention
from attnscope.attribution.value_zeroing import value_zeroing_attribution
from attnscope.errors import InputError

TEXT = "The soundtrack was wonderful, the acting wooden."


def close(a, b, tol=2e-4):
    a, b = (np.asarray(t.detach() if torch.is_tensor(t) else t, np.float64) for t in (a, b))
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= tol * scale, float(np.abs(a - b).max())


# ---------------------------------------------------------------------------- references written from the papers
def _hidden(lm):
    inputs, _ = encode(lm, TEXT)
    with torch.no_grad():
        out = lm.model(**inputs, output_hidden_states=True)
    return inputs, [h[0].double() for h in out.hidden_states]


def _lin(m, x):
    return x @ m.weight.double().T + (m.bias.double() if m.bias is not None else 0.0)


def _split(t, h):  # (N, h*dh) -> (h, N, dh)
    return t.view(t.shape[0], h, -1).transpose(0, 1)


class LayerRef:
    """One layer recomputed by hand: attention weights a (H, N, N), transformed values f (H, N, d) =
    (x W_V + b_V) W_O^h, residual x (N, d), and the attention-block decomposition of each paper."""

    def __init__(self, lm, hs, layer):
        self.lm, self.layer = lm, layer
        x = hs[layer]
        self.x = x
        n = x.shape[0]
        cfg = lm.model.config
        H = cfg.num_attention_heads
        if hasattr(lm.model, "bert"):  # post-LN encoder
            blk = lm.model.bert.encoder.layer[layer]
            sa = blk.attention.self
            q, k, v = (_split(_lin(m, x), H) for m in (sa.query, sa.key, sa.value))
            a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, -1)
            wo, self.bo = blk.attention.output.dense.weight.double(), blk.attention.output.dense.bias.double()
            self.ln1, self.ln2, self.blk, self.post = blk.attention.output.LayerNorm, blk.output.LayerNorm, blk, True
        else:  # Llama: pre-RMSNorm, RoPE, grouped-query attention, causal
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

            blk = lm.model.model.layers[layer]
            at = blk.self_attn
            ln = blk.input_layernorm
            xn = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ln.variance_epsilon) * ln.weight.double()
            hkv = cfg.num_key_value_heads
            q, k, v = _split(_lin(at.q_proj, xn), H), _split(_lin(at.k_proj, xn), hkv), _split(_lin(at.v_proj, xn), hkv)
            cos, sin = lm.model.model.rotary_emb(x[None].float(), torch.arange(n)[None])
            q, k = apply_rotary_pos_emb(q[None], k[None], cos.double(), sin.double())
            q, k = q[0], k[0]
            rep = H // hkv
            k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
            s = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
            s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
            a = torch.softmax(s, -1)
            wo, self.bo = at.o_proj.weight.double(), None
            self.post = False
        d = x.shape[-1]
        dh = v.shape[-1]
        self.a = a  # (H, N, N)
        self.f = torch.stack([v[h] @ wo[:, h * dh:(h + 1) * dh].T for h in range(H)])  # (H, N, d)
        self.n, self.d, self.H = n, d, H

    def attn_vec(self, i, j):  # Σ_h α^h_ij f_h(x_j)
        return sum(self.a[h, i, j] * self.f[h, j] for h in range(self.H))

    def pre_ln1(self, i):  # x_i + attention output (bias included)
        out = sum(self.attn_vec(i, j) for j in range(self.n)) + self.x[i]
        return out + self.bo if self.bo is not None else out

    def T(self, i, j):  # Kobayashi 2021 / ALTI decomposed vector
        z = self.attn_vec(i, j) + (self.x[i] if i == j else 0.0)
        if not self.post:
            return z
        pre = self.pre_ln1(i)
        sigma = torch.sqrt(pre.var(unbiased=False) + self.ln1.eps)
        return self.ln1.weight.double() * (z - z.mean()) / sigma

    def y(self, i):  # the attention block's output
        pre = self.pre_ln1(i)
        if not self.post:
            return pre
        return F.layer_norm(pre, (self.d,), self.ln1.weight.double(), self.ln1.bias.double(), self.ln1.eps)

    def pre_ln2(self, i):  # post-LN: feed-forward output + its residual
        h1 = self.y(i)
        ff = _lin(self.blk.output.dense, F.gelu(_lin(self.blk.intermediate.dense, h1)))
        return ff + h1


def alti_matrix(ref):
    c = np.zeros((ref.n, ref.n))
    for i in range(ref.n):
        y = ref.y(i)
        for j in range(ref.n):
            c[i, j] = max(0.0, float(y.abs().sum() - (y - ref.T(i, j)).abs().sum()))
        c[i] /= c[i].sum()
    return c


# ---------------------------------------------------------------------------- fixtures
def _frozen_with_random_norms(lm):
    """No graph needed by the references; norm weights initialise to 1 (and biases to 0), which would hide a
    missing γ or β: give them random values."""
    lm.model.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    for name, p in lm.model.named_parameters():
        if "norm" in name.lower():
            p.copy_((torch.rand(p.shape, generator=g) + 0.5) if name.endswith("weight")
                    else 0.1 * torch.randn(p.shape, generator=g))
    return lm


@pytest.fixture(scope="module")
def bert():
    return _frozen_with_random_norms(tiny_model("bert"))


@pytest.fixture(scope="module")
def llama():
    return _frozen_with_random_norms(tiny_model("llama", task="lm"))


@pytest.fixture(scope="module")
def refs(bert, llama):
    out = {}
    for name, lm in (("bert", bert), ("llama", llama)):
        _, hs = _hidden(lm)
        out[name] = (hs, [LayerRef(lm, hs, la) for la in range(lm.model.config.num_hidden_layers)])
    return out


def test_reference_reproduces_the_model(refs):
    """The hand-written layer is the model's: LN2(FFN + residual) is BERT's next hidden state."""
    hs, rs = refs["bert"]
    r = rs[0]
    for i in range(r.n):
        out = F.layer_norm(r.pre_ln2(i), (r.d,), r.ln2.weight.double(), r.ln2.bias.double(), r.ln2.eps)
        close(out, hs[1][i], 1e-4)


# ---------------------------------------------------------------------------- the methods
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_norm_attention_per_head_and_summed(arch, bert, llama, refs):
    lm = bert if arch == "bert" else llama
    res = norm_attention(lm, TEXT)
    for la, r in enumerate(refs[arch][1]):
        per_head = torch.stack([r.a[h] * r.f[h].norm(dim=-1)[None, :] for h in range(r.H)])  # α^h_ij ‖f_h(x_j)‖
        close(res.per_head[la], per_head.numpy())
        summed = np.array([[float(r.attn_vec(i, j).norm()) for j in range(r.n)] for i in range(r.n)])
        close(res.per_layer[la], summed)
    assert "not" in res.what_it_is_not and res.per_head.shape[:2] == (2, 4)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_attention_block_mixing_with_residual_and_layer_norm(arch, bert, llama, refs):
    lm = bert if arch == "bert" else llama
    res = attention_block_mixing(lm, TEXT, layers=[1])
    r = refs[arch][1][1]
    ref = np.array([[float(r.T(i, j).norm()) for j in range(r.n)] for i in range(r.n)])
    assert res.layers == [1]
    close(res.per_layer[0], ref)


def test_globenc_bert_and_refused_for_pre_ln(bert, llama, refs):
    res = globenc_attribution(bert, TEXT)
    mats = []
    for r in refs["bert"][1]:
        m = np.zeros((r.n, r.n))
        for i in range(r.n):
            pre2 = r.pre_ln2(i)
            sigma2 = torch.sqrt(pre2.var(unbiased=False) + r.ln2.eps)
            for j in range(r.n):
                t = r.T(i, j)
                m[i, j] = float((r.ln2.weight.double() * (t - t.mean()) / sigma2).norm())
        mats.append(m / m.sum(-1, keepdims=True))
    close(res.per_layer, np.stack(mats))
    close(res.aggregated, mats[1] @ mats[0])  # rollout, no added identity
    with pytest.raises(InputError, match="post-layer-norm"):
        globenc_attribution(llama, TEXT)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_alti_contributions_and_rollout(arch, bert, llama, refs):
    lm = bert if arch == "bert" else llama
    res = alti_attribution(lm, TEXT)
    c = [alti_matrix(r) for r in refs[arch][1]]
    close(res.per_layer, np.stack(c))
    close(res.aggregated, c[1] @ c[0])
    close(res.aggregated.sum(-1), np.ones(len(res.tokens)))


def test_alti_logit_llama(llama, refs):
    hs, rs = refs["llama"]
    inputs, _ = encode(llama, TEXT)
    got = {}
    norm = llama.model.model.norm
    h = norm.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0][0].double()))
    with torch.no_grad():
        logits = llama.model(**inputs).logits[0, -1]
    h.remove()
    w = int(logits.argmax())
    n = rs[0].n
    i = n - 1
    s = torch.rsqrt(got["x"][i].pow(2).mean() + norm.variance_epsilon)
    u = llama.model.lm_head.weight[w].double() * norm.weight.double()
    rollout = np.eye(n)
    score = np.zeros(n)
    for r in rs:
        delta = np.array([float(r.attn_vec(i, k) @ u * s) for k in range(n)])  # Δlogit^l_{w←k}
        score += delta @ rollout  # propagated to the inputs by ALTI up to the previous layer
        rollout = alti_matrix(r) @ rollout
    res = alti_logit_attribution(llama, TEXT)
    assert res.meta["target"] == w
    close(res.token_scores(i), score)


def test_alti_logit_needs_a_causal_lm(bert):
    with pytest.raises(InputError, match="causal language model"):
        alti_logit_attribution(bert, TEXT)


def _layer_output(lm, layer, j=None, head=None):
    """Output of transformer layer ``layer`` (N, d) in a plain SDPA forward, with token j's value vector zeroed
    there (in one head, or all) when j is given: hooks on the value projection and on the layer (not
    ``hidden_states``, whose last entry of a Llama is after the final norm)."""
    if hasattr(lm.model, "bert"):
        block = lm.model.bert.encoder.layer[layer]
        proj = block.attention.self.value
    else:
        block = lm.model.model.layers[layer]
        proj = block.self_attn.v_proj
    dh = lm.model.config.hidden_size // lm.model.config.num_attention_heads
    got = {}

    def zero(_m, _a, out):
        out = out.clone()
        cols = slice(None) if head is None else slice(head * dh, (head + 1) * dh)
        out[:, j, cols] = 0.0
        return out

    def keep(_m, _a, out):
        got["out"] = (out[0] if isinstance(out, tuple) else out)[0].double()

    handles = [block.register_forward_hook(keep)] + ([proj.register_forward_hook(zero)] if j is not None else [])
    try:
        _hidden(lm)
    finally:
        for h in handles:
            h.remove()
    return got["out"]


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_value_zeroing_against_a_zeroed_value_forward(arch, bert, llama, refs):
    lm = bert if arch == "bert" else llama
    hs = refs[arch][0]
    last = len(hs) - 2  # the last layer: its input comes from every layer below
    res = value_zeroing_attribution(lm, TEXT, layers=[0, last], per_head=arch == "bert", max_batch=16)
    n = len(res.tokens)
    for li, layer in enumerate((0, last)):
        plain = _layer_output(lm, layer)
        ref = np.zeros((n, n))
        for j in range(n):
            ref[:, j] = 1 - F.cosine_similarity(_layer_output(lm, layer, j), plain, dim=-1).numpy()
        close(res.per_layer[li], np.clip(ref, 0, None), 1e-4)
    if arch == "bert":
        j, h = 3, 2
        one = 1 - F.cosine_similarity(_layer_output(lm, 0, j, head=h), _layer_output(lm, 0), dim=-1).numpy()
        close(res.per_head[0, h, :, j], one, 1e-4)
    else:
        assert np.all(np.triu(res.per_layer[0], 1) < 1e-6)  # causal: later tokens change nothing before them


def test_explain_registers_the_value_aware_methods(bert, llama):
    names = ["value_norm", "attn_res_ln", "globenc", "alti", "alti_logit", "value_zeroing"]
    assert set(names) <= set(ALL_METHODS)
    assert "alti_logit" not in methods_for(bert) and "globenc" not in methods_for(llama)
    e = explain(llama, TEXT, ["attention", "alti", "alti_logit"])
    close(e.scores["alti"], alti_attribution(llama, TEXT).aggregated[-1])
    close(e.scores["alti_logit"], alti_logit_attribution(llama, TEXT).token_scores(-1))
    assert set(e.meta["value_aware"]["alti"]) == {"is", "is_not", "paper"}
    with pytest.raises(InputError, match="causal language model"):
        explain(bert, TEXT, ["alti_logit"])


def test_encoder_decoder_refused_in_one_line(tiny):
    lm = tiny("marian")
    for fn in (norm_attention, alti_attribution, value_zeroing_attribution):
        with pytest.raises(InputError, match="encoder-only and decoder-only") as e:
            fn(lm, TEXT)
        assert "\n" not in str(e.value)
