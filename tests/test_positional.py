"""Positional encodings: sinusoid formula, learned-position similarity, the exact content/position split of
BERT layer-0 scores, and rotary embeddings (relative-distance invariance, a real head's profile), each against
a reference computed here on tiny random-init models."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from attnscope.errors import CaptureError, InputError
from attnscope.positional import encodings as enc

TEXT = "the cat sat on the mat and the dog sat too"


@pytest.fixture(scope="module")
def tiny_bert(tiny):
    """The tiny BERT with a non-trivial embedding LayerNorm (γ ≠ 1, β ≠ 0) and non-zero q/k biases, so every
    part of the content/position split is exercised (a fresh copy: the shared fixture stays untouched)."""
    from attnscope.models import wrap_model

    base = tiny("bert")
    model = copy.deepcopy(base.model).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ln = model.embeddings.LayerNorm
        ln.weight.copy_(1 + 0.5 * torch.randn(ln.weight.shape, generator=g))
        ln.bias.copy_(0.3 * torch.randn(ln.bias.shape, generator=g))
        att = model.encoder.layer[0].attention.self
        for lin in (att.query, att.key):
            lin.bias.copy_(0.2 * torch.randn(lin.bias.shape, generator=g))
        model.embeddings.position_embeddings.weight.mul_(5.0)  # make position matter
    return wrap_model(model, base.tokenizer, name="tiny-bert-ln")


@pytest.fixture(scope="module")
def tiny_llama(tiny):
    return tiny("llama")


# ---------------------------------------------------------------------------- sinusoidal
def test_sinusoid_formula_and_similarity():
    n, d = 50, 16
    res = enc.sinusoidal(n, d)
    ref = np.zeros((n, d))
    for p in range(n):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)  # Vaswani et al. 2017, §3.5
            ref[p, 2 * i] = math.sin(angle)
            ref[p, 2 * i + 1] = math.cos(angle)
    np.testing.assert_allclose(res.encoding, ref, atol=1e-12)
    # PE[m]·PE[n] = Σ_i cos((m − n) ω_i): a function of the offset only
    omega = [10000 ** (-2 * i / d) for i in range(d // 2)]
    for m, k in [(0, 0), (3, 10), (40, 7), (12, 49)]:
        assert res.similarity[m, k] == pytest.approx(sum(math.cos((m - k) * w) for w in omega), abs=1e-9)
    off, prof = res.offset_profile()
    assert prof[0] == pytest.approx(d / 2)
    np.testing.assert_allclose(np.diagonal(res.similarity, 5), prof[5], atol=1e-9)
    with pytest.raises(InputError):
        enc.sinusoidal(10, 7)  # odd d_model
    with pytest.raises(InputError):
        enc.sinusoidal(10**6, 8)  # too many positions


# ---------------------------------------------------------------------------- learned
def test_learned_similarity_is_cosine_of_the_table(tiny_bert):
    res = enc.learned_positions(tiny_bert, 20)
    w = tiny_bert.model.embeddings.position_embeddings.weight.detach().double()[:20]  # (20, D)
    ref = torch.nn.functional.cosine_similarity(w[:, None], w[None], dim=-1).numpy()  # (20, 20)
    np.testing.assert_allclose(res.similarity, ref, atol=1e-10)
    ks, mean, _ = res.offset_profile(3)
    assert mean[0] == pytest.approx(1.0) and mean[2] == pytest.approx(np.diagonal(ref, 2).mean())


def _reference_scores(model, ids: torch.Tensor, zero_position: bool = False) -> torch.Tensor:
    """Layer-0 q·k/√d from the weights: LN(word + position + segment 0), then the query/key projections."""
    e = model.embeddings
    n = ids.shape[-1]
    pos = e.position_embeddings.weight[:n] * (0.0 if zero_position else 1.0)
    x = e.word_embeddings.weight[ids[0]] + pos + e.token_type_embeddings.weight[0]  # (N, D)
    h = torch.nn.functional.layer_norm(x, x.shape[-1:], e.LayerNorm.weight, e.LayerNorm.bias, e.LayerNorm.eps)
    att = model.encoder.layer[0].attention.self
    heads = model.config.num_attention_heads
    q = att.query(h).reshape(n, heads, -1).transpose(0, 1)  # (H, N, d)
    k = att.key(h).reshape(n, heads, -1).transpose(0, 1)
    return (q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])).double()  # (H, N, N)


def test_decomposition_terms_sum_to_the_score(tiny_bert):
    dec = enc.score_decomposition(tiny_bert, TEXT)
    ids = tiny_bert.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = _reference_scores(tiny_bert.model, ids).numpy()
    total = sum(dec.terms[t] for t in enc.TERMS)
    np.testing.assert_allclose(total, ref, atol=2e-5)
    np.testing.assert_allclose(dec.score, ref, atol=2e-5)
    # the position-position term by its definition, from the weights: γ ⊙ (p − mean p)/σ(x), through W_q, W_k
    e, att = tiny_bert.model.embeddings, tiny_bert.model.encoder.layer[0].attention.self
    with torch.no_grad():
        n = ids.shape[-1]
        p = e.position_embeddings.weight[:n].double()
        x = e.word_embeddings.weight[ids[0]].double() + p + e.token_type_embeddings.weight[0].double()
        sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + e.LayerNorm.eps)
        hp = e.LayerNorm.weight.double() * (p - p.mean(-1, keepdim=True)) / sigma
        qp = (hp @ att.query.weight.double().T).reshape(n, 4, -1).transpose(0, 1)  # (H, N, d)
        kp = (hp @ att.key.weight.double().T).reshape(n, 4, -1).transpose(0, 1)
        pp = (qp @ kp.transpose(1, 2) / math.sqrt(qp.shape[-1])).numpy()
    np.testing.assert_allclose(dec.terms["position-position"], pp, atol=1e-6)
    assert np.abs(dec.terms["content-position"]).max() > 1e-3  # the split is not trivial here
    shares = dec.shares()
    np.testing.assert_allclose(sum(shares.values()), 1.0, atol=1e-9)


def test_decomposition_without_position_is_all_content(tiny_bert):
    from attnscope.models import wrap_model

    model = copy.deepcopy(tiny_bert.model)
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.zero_()
    lm = wrap_model(model, tiny_bert.tokenizer, name="no-positions")
    dec = enc.score_decomposition(lm, TEXT)
    for t in ("content-position", "position-content", "position-position"):
        assert np.abs(dec.terms[t]).max() < 1e-12
    ids = tiny_bert.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = _reference_scores(model, ids, zero_position=True).numpy()
    np.testing.assert_allclose(dec.terms["content-content"], ref, atol=2e-5)


def test_decomposition_refuses_other_models(tiny_llama):
    with pytest.raises(InputError, match="BERT-style"):
        enc.score_decomposition(tiny_llama, TEXT)
    with pytest.raises(InputError, match="learned absolute"):
        enc.learned_positions(tiny_llama)


# ---------------------------------------------------------------------------- rotary
def _hf_rotate(lm, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Reference rotation: transformers' own rotary module and apply_rotary_pos_emb. x: (P, d)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rot = lm.model.model.rotary_emb
    cos, sin = rot(x[None].float(), positions[None])  # (1, P, d)
    out, _ = apply_rotary_pos_emb(x[None, None].float(), x[None, None].float(), cos, sin)
    return out[0, 0].double()  # (P, d)


def test_rotation_matches_transformers_and_depends_on_distance_only(tiny_llama):
    fr = enc.rotary_frequencies(tiny_llama)
    d = fr.head_dim
    assert d == 8
    assert fr.inv_freq == pytest.approx([10000 ** (-2 * i / d) for i in range(d // 2)])  # Su et al. θ_i
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    pos = torch.arange(0, 60)
    ours = enc.apply_rotary(q[None].expand(60, d), pos, torch.from_numpy(fr.inv_freq))  # (60, d)
    np.testing.assert_allclose(ours.numpy(), _hf_rotate(tiny_llama, q[None].expand(60, d), pos).numpy(), atol=1e-5)
    rq = _hf_rotate(tiny_llama, q[None].expand(60, d), pos)  # (60, d): q at every position
    rk = _hf_rotate(tiny_llama, k[None].expand(60, d), pos)
    dots = rq @ rk.T  # (m, n): q at m · k at n
    for delta in (0, 1, 7, 30):
        diag = torch.diagonal(dots, -delta)  # every (m, n) with m − n = delta
        assert float(diag.max() - diag.min()) < 1e-4, delta
    assert float((dots[5, 0] - dots[1, 0]).abs()) > 1e-2  # but it does change with the distance


def test_rotary_profile_of_a_real_head(tiny_llama):
    layer, head = 1, 3
    prof = enc.rotary_profile(tiny_llama, TEXT, layer=layer, head=head, pairs=[(9, 2), (4, 4)], max_distance=40)
    assert prof.kv_head == 1 and prof.max_check_error < 1e-3
    # q and k as the model projects them (hooked here), rotated by transformers at (n + Δ, n) for several n
    got = {}
    att = tiny_llama.model.model.layers[layer].self_attn
    hs = [att.q_proj.register_forward_hook(lambda m, a, o: got.__setitem__("q", o[0].detach())),
          att.k_proj.register_forward_hook(lambda m, a, o: got.__setitem__("k", o[0].detach()))]
    ids = tiny_llama.tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        tiny_llama.model(**ids)
    for h in hs:
        h.remove()
    n_tok = got["q"].shape[0]
    q = got["q"].reshape(n_tok, 4, 8)[:, head].double()  # (N, d)
    k = got["k"].reshape(n_tok, 2, 8)[:, head // 2].double()
    for p, (qi, kj) in enumerate(prof.pairs):
        for start in (0, 13):
            deltas = torch.arange(41)
            rq = _hf_rotate(tiny_llama, q[qi][None].expand(41, 8), start + deltas)  # (41, d)
            rk = _hf_rotate(tiny_llama, k[kj][None], torch.tensor([start]))  # (1, d)
            ref = (rq @ rk[0]).numpy() / math.sqrt(8)
            np.testing.assert_allclose(prof.score[p], ref, atol=1e-4)
    assert prof.score[:, 0] == pytest.approx(prof.unrotated, abs=1e-5)  # Δ = 0: rotation cancels
    # mean over every causal (query, key ≤ query) pair, brute force
    rq = _hf_rotate(tiny_llama, q, torch.full((n_tok,), 20))
    for delta in (0, 3, 17):
        rk = _hf_rotate(tiny_llama, k, torch.full((n_tok,), 20 - delta))
        s = (rq @ rk.T) / math.sqrt(8)  # (N, N)
        ref = float(s[torch.ones(n_tok, n_tok, dtype=torch.bool).tril()].mean())
        assert prof.mean_score[delta] == pytest.approx(ref, abs=1e-4)


def test_rotary_refuses_bad_input(tiny_llama, tiny_bert):
    with pytest.raises(InputError, match="rotary"):
        enc.rotary_profile(tiny_bert, TEXT)
    with pytest.raises(InputError, match="head"):
        enc.rotary_profile(tiny_llama, TEXT, head=4)
    with pytest.raises(InputError, match="max_distance"):
        enc.rotary_profile(tiny_llama, TEXT, max_distance=10**9)


def test_rotary_self_check_catches_another_layout(tiny_llama, monkeypatch):
    """An interleaved-pair model would not be reproduced by the half-split rotation: refused, not explained."""
    monkeypatch.setattr(enc, "rotate_half", lambda x: torch.stack((-x[..., 1::2], x[..., 0::2]), -1).flatten(-2))
    with pytest.raises(CaptureError, match="rotary layout"):
        enc.rotary_profile(tiny_llama, TEXT, layer=0, head=0)


# ---------------------------------------------------------------------------- figures and CLI
def test_figures(tmp_path, tiny_bert, tiny_llama):
    from attnscope.positional import plots

    assert plots.plot_sinusoidal(enc.sinusoidal(32, 16), tmp_path / "s.png").stat().st_size > 0
    assert plots.plot_learned(enc.learned_positions(tiny_bert, 40), enc.score_decomposition(tiny_bert, TEXT),
                              tmp_path / "l.png").stat().st_size > 0
    assert plots.plot_rotary(enc.rotary_profile(tiny_llama, TEXT, max_distance=20), tmp_path / "r.png").stat().st_size > 0


def test_cli_sinusoidal_and_errors(tmp_path, capsys):
    import json

    from attnscope.cli import main

    with pytest.raises(SystemExit) as e:
        main(["positional", "--kind", "sinusoidal", "--positions", "40", "--d-model", "16", "--out", str(tmp_path)])
    assert e.value.code in (0, None)
    data = json.loads((tmp_path / "sinusoidal.json").read_text())
    assert data["similarity_by_offset"][0] == pytest.approx(8.0) and (tmp_path / "sinusoidal.png").stat().st_size > 0
    for args, needle in ((["--kind", "wavelet"], "--kind must be"), (["--kind", "sinusoidal", "--d-model", "7"], "even"),
                         (["--kind", "sinusoidal", "--model", "minilm"], "needs no --model")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["positional", *args, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and needle in err, err
