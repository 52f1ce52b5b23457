"""Interventions through the attnscope attention function (SDPA models), attention gradients, Captum."""

import numpy as np
import pytest
import torch

from attnscope.attribution.interventions import (
    HeadGate, KeepHeads, Knockout, MeanHeads, ProbsProbe, RemoveTopKey, ScaleHeads, ZeroHeads, encode, intervene,
    prediction_change, run_with_interventions,
)
from attnscope.attribution.testing import tiny_model
from attnscope.capture import Site, capture
from attnscope.errors import InputError

TEXT = "The movie was surprisingly good, said she."


@pytest.fixture(scope="module", params=["bert", "gpt2", "llama"])
def lm(request):
    return tiny_model(request.param)


def _logits(lm, ivs, **kw):
    inputs, _ = encode(lm, TEXT)
    return run_with_interventions(lm, inputs, ivs, **kw).logits


def test_noop_interventions_are_bitwise_equal(lm):
    inputs, _ = encode(lm, TEXT)
    with torch.no_grad():
        ref = lm.model(**inputs).logits
    assert lm.model.config._attn_implementation == "sdpa"
    noop = [ScaleHeads({0: [1], 1: None}, factor=1.0), Knockout(), ZeroHeads([]), Knockout(keys=[1], heads=[])]
    assert not any(iv.applies(Site("self", layer)) for iv in noop for layer in range(2))
    out = _logits(lm, noop)
    assert torch.equal(ref, out)
    assert lm.model.config._attn_implementation == "sdpa"  # restored


def test_zero_all_heads_changes_prediction_and_equals_keep_none(lm):
    ref = _logits(lm, [])
    zero = _logits(lm, [ZeroHeads({0: None, 1: None})])
    keep_none = _logits(lm, [KeepHeads([])])
    assert not torch.allclose(ref, zero)
    torch.testing.assert_close(zero, keep_none)
    # keeping every head = explicit path with unchanged probabilities: equal to SDPA within float tolerance
    keep_all = _logits(lm, [KeepHeads({0: None, 1: None})])
    torch.testing.assert_close(ref, keep_all, atol=1e-5, rtol=1e-4)


def test_scale_is_linear_in_head_output(lm):
    # scaling one head by 0 and by 1 bracket the effect; 0.5 lies strictly between for some logit
    a = _logits(lm, [ScaleHeads([(1, 2)], factor=0.0)])
    b = _logits(lm, [ScaleHeads([(1, 2)], factor=0.5)])
    c = _logits(lm, [])
    assert not torch.allclose(a, c)
    assert not torch.allclose(b, c) and not torch.allclose(a, b)


def test_knockout_all_but_one_key_gives_it_all_weight(lm):
    n = len(encode(lm, TEXT)[1])
    keep = 2
    trace = capture(lm, TEXT, interventions=[Knockout(keys=[k for k in range(n) if k != keep])])
    w = trace.weights("self").float()  # (L, H, N, N)
    # rows that may attend to the kept key put all their weight on it
    rows = slice(keep, None)
    torch.testing.assert_close(w[:, :, rows, keep], torch.ones_like(w[:, :, rows, keep]), atol=1e-3, rtol=0)
    assert float(w[:, :, rows].sum(-1).sub(1).abs().max()) < 1e-3


def test_knockout_edges_and_layer_restriction(lm):
    probe = ProbsProbe()
    inputs, _ = encode(lm, TEXT)
    run_with_interventions(lm, inputs, [Knockout(edges=[(5, 1), (5, 3)], layers=[1]), probe])
    maps = probe.maps()[:, 0]  # (L, H, N, N)
    assert float(maps[1, :, 5, [1, 3]].abs().max()) == 0.0
    assert float(maps[0, :, 5, [1, 3]].min()) > 0
    torch.testing.assert_close(maps[1, :, 5].sum(-1), torch.ones(maps.shape[1]))


def test_mean_heads_uniform_over_allowed_keys(lm):
    probe = ProbsProbe()
    inputs, _ = encode(lm, TEXT)
    run_with_interventions(lm, inputs, [MeanHeads({0: [0]}), probe])
    p = probe.maps()[0, 0, 0]  # layer 0, head 0: (N, N)
    allowed = p > 0
    n_allowed = allowed.sum(-1, keepdim=True).float()
    torch.testing.assert_close(p, allowed.float() / n_allowed)


def test_remove_top_key_weight_manipulation(lm):
    before, after = ProbsProbe(), ProbsProbe()
    inputs, _ = encode(lm, TEXT)
    run_with_interventions(lm, inputs, [before, RemoveTopKey(heads={0: [1]}), after])
    b, a = before.maps()[0, 0, 1], after.maps()[0, 0, 1]  # (N, N)
    top = b.argmax(-1)
    multi = (b > 0).sum(-1) > 1
    assert float(a[multi].gather(-1, top[multi, None]).abs().max()) == 0.0
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[0]))
    # renormalised: the remaining keys keep their relative weights
    r = 6
    rest = b[r].clone()
    rest[top[r]] = 0
    torch.testing.assert_close(a[r], rest / rest.sum())


def test_head_gate_gradient_equals_attention_times_gradient(lm):
    from attnscope.attribution.gradients import attention_gradients

    inputs, _ = encode(lm, TEXT)
    gate = HeadGate(2, 4)
    out = run_with_interventions(lm, inputs, [gate], grad=True).logits[0]
    t = int(out.argmax())
    (g,) = torch.autograd.grad(out[t], gate.gate)
    ag = attention_gradients(lm, TEXT, target=t)
    np.testing.assert_allclose(g.numpy(), ag.head_scores(), rtol=1e-3, atol=1e-6)
    assert all(p.grad is None for p in lm.model.parameters())  # no parameter gradient accumulated


def test_prediction_change_metrics():
    base = torch.tensor([2.0, 0.0, -1.0])
    same = prediction_change(base, base)
    assert same["kl"] == 0.0 and same["prob_shift"] == 0.0 and not same["flipped"]
    moved = prediction_change(base, torch.tensor([0.0, 2.0, -1.0]))
    assert moved["kl"] > 0 and moved["prob_shift"] < 0 and moved["logit_diff"] == -2.0 and moved["flipped"]


def test_intervene_reports_change():
    lm = tiny_model("bert")
    r = intervene(lm, TEXT, [ZeroHeads({0: None, 1: None})])
    assert r["kl"] > 0 and r["tokens"][0] == "[CLS]"
    with pytest.raises(InputError):
        intervene(lm, TEXT, [ZeroHeads({0: [9]})])
