"""Attribution across a generation (attnscope.attribution.generation): every step's row equals a
fresh single-step attribution on the full prefix, computed here without the KV cache (plain transformers
forward on input embeddings), for decoder-only LMs, transformers encoder-decoders and the GRU seq2seq."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnscope.attribution.generation import generation_attribution, seq2seq_attribution
from attnscope.attribution.interventions import encode

PROMPT = "the cat sat on"


@pytest.fixture(scope="module")
def llama(tiny):
    return tiny("llama")


def _prefix(lm, gen, i):
    ids = encode(lm, PROMPT)[0]["input_ids"]
    return torch.cat([ids, torch.tensor([gen[:i]], dtype=ids.dtype)], 1)  # (1, P + i)


def test_grad_x_input_with_cache_equals_fresh_full_prefix(llama):
    r = generation_attribution(llama, PROMPT, 3, "grad_x_input")
    p = len(r.prompt_tokens)
    assert r.scores.shape == (len(r.generated_ids), p + len(r.generated_ids) - 1) and r.meta["kv_cache"]
    for i, t in enumerate(r.generated_ids):
        prefix = _prefix(llama, r.generated_ids, i)
        x = llama.model.get_input_embeddings()(prefix).detach().requires_grad_(True)  # (1, N, D)
        logits = llama.model(inputs_embeds=x, use_cache=False).logits[0, -1]
        assert int(logits.argmax()) == t  # greedy
        (g,) = torch.autograd.grad(logits[t], x)
        want = (x * g).sum(-1)[0].detach().double().numpy()
        np.testing.assert_allclose(r.scores[i, :p + i], want, rtol=1e-4, atol=1e-6)
        assert np.isnan(r.scores[i, p + i:]).all()
        assert r.target_logits[i] == pytest.approx(float(logits[t].detach()), rel=1e-5)


def test_attnlrp_with_cache_equals_fresh_and_conserves(llama):
    from attnscope.attribution.attnlrp import relevance

    r = generation_attribution(llama, PROMPT, 3, "attnlrp")
    p = len(r.prompt_tokens)
    for i, t in enumerate(r.generated_ids):
        rel, _, _, check = relevance(llama, {"input_ids": _prefix(llama, r.generated_ids, i)}, target=t)
        np.testing.assert_allclose(r.scores[i, :p + i], rel.sum(-1).numpy(), rtol=1e-4, atol=1e-6)
        assert check.ok and r.checks[i]["check"] == "conservation" and r.checks[i]["ok"]
    assert r.failed_steps == [] and not r.warnings


def test_integrated_gradients_per_step_are_complete(llama):
    """Σ of each row = F(prefix) − F(baseline), both computed here (baseline: pad for every token but the
    special ones)."""
    r = generation_attribution(llama, PROMPT, 2, "integrated_gradients", ig_steps=8, ig_max_steps=8)
    pad = llama.tokenizer.pad_token_id
    emb = llama.model.get_input_embeddings()
    for i, t in enumerate(r.generated_ids):
        prefix = _prefix(llama, r.generated_ids, i)
        base = prefix.clone()
        keep = torch.tensor(llama.tokenizer.get_special_tokens_mask(prefix[0].tolist(), already_has_special_tokens=True),
                            dtype=torch.bool)
        base[0, ~keep] = pad
        with torch.no_grad():
            diff = float(llama.model(inputs_embeds=emb(prefix)).logits[0, -1, t]
                         - llama.model(inputs_embeds=emb(base)).logits[0, -1, t])
        assert np.nansum(r.scores[i]) == pytest.approx(diff, rel=0.05, abs=1e-3)
        assert r.checks[i]["check"] == "completeness" and r.checks[i]["ok"]
        assert not r.meta["kv_cache"]


def test_seq2seq_source_and_target_equal_fresh(tiny):
    t5 = tiny("t5")
    r = seq2seq_attribution(t5, "the cat sat on the mat", 3)
    src = t5.tokenizer("the cat sat on the mat", return_tensors="pt")
    shared = t5.model.get_input_embeddings()
    start = t5.model.config.decoder_start_token_id
    assert r.source_scores.shape == (len(r.generated_ids), src["input_ids"].shape[1])
    for i, t in enumerate(r.generated_ids):
        x = shared(src["input_ids"]).detach().requires_grad_(True)  # (1, S, D)
        y = shared(torch.tensor([[start] + r.generated_ids[:i]])).detach().requires_grad_(True)  # (1, i + 1, D)
        logits = t5.model(inputs_embeds=x, attention_mask=src["attention_mask"], decoder_inputs_embeds=y,
                          use_cache=False).logits[0, -1]
        assert int(logits.argmax()) == t
        gx, gy = torch.autograd.grad(logits[t], [x, y])
        np.testing.assert_allclose(r.source_scores[i], (x * gx).sum(-1)[0].detach().numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(r.scores[i, :i + 1], (y * gy).sum(-1)[0].detach().numpy(), rtol=1e-4, atol=1e-6)


def test_gru_seq2seq_equals_teacher_forced_forward():
    from attnscope.seq2seq.data import BOS_ID
    from attnscope.seq2seq.model import Seq2Seq, Seq2SeqConfig

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig.tiny(12, 12)).eval()
    source = [4, 5, 6, 7, 2]
    r = seq2seq_attribution(model, source, 3)
    for i, t in enumerate(r.generated_ids):
        leaves = []

        def hook(m, inp, out):
            leaves.append(out.detach().requires_grad_(True))
            return leaves[-1]

        hs = [model.encoder.embed.register_forward_hook(hook), model.decoder.embed.register_forward_hook(hook)]
        try:
            src = torch.tensor([source])
            logits, _ = model(src, torch.ones_like(src, dtype=torch.bool), torch.tensor([[BOS_ID] + r.generated_ids[:i]]))
        finally:
            for h in hs:
                h.remove()
        grads = torch.autograd.grad(logits[0, -1, t], leaves)
        np.testing.assert_allclose(r.source_scores[i], (leaves[0] * grads[0]).sum(-1)[0].detach().numpy(),
                                   rtol=1e-4, atol=1e-7)
        want = [float((leaf * g).sum()) for leaf, g in zip(leaves[1:], grads[1:])]
        np.testing.assert_allclose(r.scores[i, :i + 1], want, rtol=1e-4, atol=1e-7)


def test_cli_attribute_generation(llama, tmp_path, capsys):
    import json

    from attnscope.cli import main

    d = tmp_path / "tiny-llama"
    llama.model.save_pretrained(d)
    llama.tokenizer.save_pretrained(d)
    with pytest.raises(SystemExit) as e:
        main(["attribute-generation", PROMPT, "-m", str(d), "-n", "2", "--method", "attnlrp", "-o",
              str(tmp_path / "o"), "--quiet"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "conservation: ok" in out and "attnlrp:" in out
    res = json.loads((tmp_path / "o" / "generation.json").read_text())
    assert len(res["generated_tokens"]) == 2 and res["note"] and (tmp_path / "o" / "generation.png").stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        main(["attribute-generation", PROMPT, "-m", str(d), "-n", "0", "-o", str(tmp_path / "p")])
    assert e.value.code == 2 and "max_new_tokens must be 1..256" in capsys.readouterr().err


def test_seq2seq_integrated_gradients_are_complete(tiny):
    """Σ of source and target rows = F(x) − F(baseline), both computed here from token ids (baseline: padding for
    the source tokens but the special ones and for the generated prefix; the decoder start token kept)."""
    t5 = tiny("t5")
    text = "the cat sat on the mat"
    r = seq2seq_attribution(t5, text, 2, "integrated_gradients", ig_steps=8, ig_max_steps=8)
    src = t5.tokenizer(text, return_tensors="pt")
    start, pad = t5.model.config.decoder_start_token_id, t5.tokenizer.pad_token_id
    keep = torch.tensor(t5.tokenizer.get_special_tokens_mask(src["input_ids"][0].tolist(),
                                                             already_has_special_tokens=True), dtype=torch.bool)
    base = torch.where(keep, src["input_ids"][0], torch.full_like(src["input_ids"][0], pad))[None]
    for i, t in enumerate(r.generated_ids):
        with torch.no_grad():
            fx = t5.model(input_ids=src["input_ids"], attention_mask=src["attention_mask"],
                          decoder_input_ids=torch.tensor([[start] + r.generated_ids[:i]])).logits[0, -1, t]
            fb = t5.model(input_ids=base, attention_mask=src["attention_mask"],
                          decoder_input_ids=torch.tensor([[start] + [pad] * i])).logits[0, -1, t]
        total = r.source_scores[i].sum() + np.nansum(r.scores[i])
        assert total == pytest.approx(float(fx - fb), rel=0.05, abs=1e-3)
        assert r.checks[i]["check"] == "completeness" and r.checks[i]["ok"]
        assert r.scores[i, 0] == 0 and (i == 0 or np.all(r.scores[i, 1:i + 1] != 0))  # start kept, prefix on the path


def test_gru_seq2seq_integrated_gradients_match_a_riemann_sum():
    """Each step's IG (source and target-prefix rows) against a midpoint Riemann sum of the gradient along the
    straight path, written here with torch.autograd on the teacher-forced GRU (baseline: <pad> embeddings for
    the source tokens but </s> and for the generated prefix, <s> kept); completeness checked on the sums."""
    from attnscope.seq2seq.data import BOS_ID, EOS_ID, PAD_ID
    from attnscope.seq2seq.model import Seq2Seq, Seq2SeqConfig

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig.tiny(12, 12)).eval()
    source = [4, 5, 6, 7, EOS_ID]
    r = seq2seq_attribution(model, source, 3, "integrated_gradients", ig_steps=16)
    assert r.method == "integrated_gradients" and len(r.generated_ids) == 3 and r.failed_steps == []
    src = torch.tensor([source])
    S = len(source)
    for i, t in enumerate(r.generated_ids):
        tgt = torch.tensor([[BOS_ID] + r.generated_ids[:i]])  # (1, i + 1)

        def F(xs, ys):  # teacher-forced logit of token t at step i from source (1, S, E) and target (1, i+1, E)
            rows = [ys[:, j] for j in range(i + 1)]
            hs = [model.encoder.embed.register_forward_hook(lambda m, a, o: xs),
                  model.decoder.embed.register_forward_hook(lambda m, a, o: rows.pop(0))]
            try:
                return model(src, torch.ones_like(src, dtype=torch.bool), tgt)[0][0, -1, t]
            finally:
                for h in hs:
                    h.remove()

        with torch.no_grad():
            x, y = model.encoder.embed(src), model.decoder.embed(tgt)
            xb = model.encoder.embed(torch.tensor([[PAD_ID] * (S - 1) + [EOS_ID]]))
            yb = model.decoder.embed(torch.tensor([[BOS_ID] + [PAD_ID] * i]))
        n = 64
        gx, gy = torch.zeros_like(x), torch.zeros_like(y)
        for k in range(n):  # midpoint rule on alpha in [0, 1]
            a = (k + 0.5) / n
            xa = (xb + a * (x - xb)).requires_grad_(True)
            ya = (yb + a * (y - yb)).requires_grad_(True)
            g1, g2 = torch.autograd.grad(F(xa, ya), [xa, ya])
            gx += g1 / n
            gy += g2 / n
        want_src = ((x - xb) * gx).sum(-1)[0].double().numpy()
        want_tgt = ((y - yb) * gy).sum(-1)[0].double().numpy()
        np.testing.assert_allclose(r.source_scores[i], want_src, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(r.scores[i, :i + 1], want_tgt, rtol=1e-3, atol=1e-6)
        assert np.isnan(r.scores[i, i + 1:]).all() and r.scores[i, 0] == 0  # <s> is on no path
        with torch.no_grad():
            diff = float(F(x, y) - F(xb, yb))
        assert r.source_scores[i].sum() + np.nansum(r.scores[i]) == pytest.approx(diff, rel=0.05, abs=1e-3)
        assert r.checks[i]["check"] == "completeness" and r.checks[i]["ok"]
        assert r.source_scores[i][-1] == 0  # </s> kept in the baseline


def test_gru_seq2seq_integrated_gradients_flag_a_failed_check():
    """One quadrature node on a sharpened GRU misses completeness by ~30 %: flagged loudly, per step."""
    from attnscope.errors import InputError
    from attnscope.seq2seq.model import Seq2Seq, Seq2SeqConfig

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig.tiny(12, 12)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    r = seq2seq_attribution(model, [4, 5, 6, 7, 2], 2, "integrated_gradients", ig_steps=1, ig_max_steps=1)
    assert r.failed_steps and not r.checks[0]["ok"] and r.checks[0]["relative_error"] > 0.1
    assert any("INTEGRATED GRADIENTS DID NOT CONVERGE" in w for w in r.warnings)
    with pytest.raises(InputError, match="out of range"):
        seq2seq_attribution(model, [4, 12, 2], 2, "integrated_gradients")
    with pytest.raises(InputError, match="no rules for the GRU"):
        seq2seq_attribution(model, [4, 5, 2], 2, "attnlrp")


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_seq2seq_attnlrp_with_cache_equals_fresh_and_conserves(tiny, family):
    """AttnLRP across an encoder-decoder generation (decoder cache, cross-attention keys/values cached): each
    step's source and target rows equal a fresh teacher-forced relevance of the full prefix, and conserve."""
    from attnscope.attribution.attnlrp import seq2seq_relevance

    lm = tiny(family)
    text = "the cat sat on the mat"
    r = seq2seq_attribution(lm, text, 3, "attnlrp")
    assert r.method == "attnlrp" and r.meta["kv_cache"] and len(r.generated_ids) == 3
    src = {k: v for k, v in lm.tokenizer(text, return_tensors="pt").items() if k != "token_type_ids"}
    start = lm.model.config.decoder_start_token_id
    for i, t in enumerate(r.generated_ids):
        prefix = torch.tensor([[start] + r.generated_ids[:i]])  # (1, i + 1)
        s, g, _, _, check = seq2seq_relevance(lm, {**src, "decoder_input_ids": prefix}, target=t)
        np.testing.assert_allclose(r.source_scores[i], s.sum(-1).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(r.scores[i, :i + 1], g.sum(-1).numpy(), rtol=1e-4, atol=1e-6)
        assert check.ok and r.checks[i]["check"] == "conservation" and r.checks[i]["ok"]
        total = r.source_scores[i].sum() + np.nansum(r.scores[i]) + sum(r.checks[i]["absorbed"].values())
        assert total == pytest.approx(r.target_logits[i], rel=1e-4, abs=1e-5)
    assert r.failed_steps == [] and not r.warnings
    if family == "t5":  # the relative position bias is measured on its own
        assert "position_bias" in r.checks[0]["absorbed"]
