"""AttnLRP: attention-aware layer-wise relevance propagation (Achtibat et al. 2024, "AttnLRP: Attention-Aware
Layer-Wise Relevance Propagation for Transformers", ICML), for BERT-family and Llama-family models and for
encoder-decoders (Marian/BART-family and T5, :func:`seq2seq_relevance`).

Implemented as gradient × input with modified gradients, as the paper's reference code (``lxt``,
"efficient" mode) does: a forward pass whose values are unchanged but whose backward pass carries the LRP
rules, so that relevance at any tensor ``t`` is ``t ⊙ ĝ_t`` (ĝ the modified gradient of the target logit).
The rules (paper §3):

- **linear layers**: the ε-rule with ε = 0 (plain gradient × input); a layer's bias absorbs ``b ⊙ ĝ``.
- **LayerNorm / RMSNorm**: the identity rule on the normalisation — the standard deviation is treated as a
  constant (detached); LayerNorm's mean subtraction stays linear and its shift β absorbs ``β ⊙ ĝ``.
- **element-wise activations** (GELU, SiLU, tanh, …): the identity rule, ``R_in = R_out`` element-wise.
- **softmax**: the paper's softmax rule ``R_i = x_i (R_i^out − s_i Σ_j R_j^out)``, which *is* gradient × input
  of the softmax; it is not conservative (the Taylor expansion's bias term absorbs the difference).
- **q·kᵀ and p·v** (bilinear): the uniform rule — each factor gets half: the gradient reaching the query and
  key is divided by 4 (it crosses both products), the value's by 2.
- **gated MLP** ``act(gate(x)) ⊙ up(x)``: the uniform rule on the product (gradient halved at ``down_proj``'s
  input) and the identity rule on ``act``.

The attention itself runs through attnscope's registered attention function (SDPA): a thin wrapper,
registered as ``attnscope_lrp``, divides the gradients of q, k and v and calls it. Nothing is patched at
class level; the rules are per-instance hooks removed afterwards, so other models in the process are
untouched, and the forward values are bitwise those of the model.

**Input relevance** is measured at the hidden states entering the first Transformer layer (token +
position + type embeddings after BERT's embedding LayerNorm; the token embeddings for Llama-family
models): ``R_j = Σ_d h_jd ĝ_jd`` per token.

**Encoder-decoders.** A decoder logit's relevance flows to the target prefix through the decoder's
self-attention, and to the source through cross-attention (the same uniform rule: the keys and values come from
the encoder's output) and on through the encoder. Input relevance is measured on both sides: the hidden states
entering the first encoder layer (source: token embeddings × ``embed_scale`` + sinusoidal positions for
Marian; the token embeddings for T5) and those entering the first decoder layer (target prefix, one call per
generated token with the decoder cache; the cached cross-attention keys and values keep their graph).
Conservation is checked over both: ``target logit = Σ R_source + Σ R_target + Σ A``. Marian/BART's
``final_logits_bias`` (added to the LM head's output) counts in ``A_bias``. T5's relative position bias is a
learned term added to the attention scores, like the additive mask; it is measured on its own as
``A_position_bias`` (``Σ b ⊙ ĝ`` at the scores, the same bias rule as a linear layer's) and taken out of
``A_softmax``. T5 v1.1's gated feed-forward (``wi_0``, ``wi_1``) gets the uniform rule on the product, as
Llama's does.

**Conservation** (:class:`Conservation`, on every result). With exact arithmetic,

    target logit = Σ_j R_j + A_bias + A_norm + A_activation + A_softmax

where the absorbed terms are measured on the same backward pass: ``A_bias`` = Σ over linear layers of
``b ⊙ ĝ_out``; ``A_norm`` = Σ over norms of ``(y − linear part) ⊙ ĝ_out`` (LayerNorm's β; zero for RMSNorm
up to rounding); ``A_activation`` likewise (zero up to rounding); ``A_softmax`` = Σ over attention calls of
(relevance at the attention output − relevance at q, k, v): the softmax rule's non-conservation and the
additive mask. The check passes when the identity closes: ``|residual| <= CONSERVATION_RTOL · scale +
CONSERVATION_ATOL`` with ``residual`` = logit − Σ R − Σ A and ``scale`` = |logit| + |Σ R| + Σ |A|. A
residual means an operation on the path has no rule (a model this module does not support): such a result
is not an AttnLRP explanation and is flagged loudly. ``input_share`` = Σ R / logit says how much of the logit
the tokens carry; the rest went to biases and the softmax, as the paper's rules define.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CaptureError, InputError
from ..models import LoadedModel, require_trained_head

CONSERVATION_RTOL = 1e-3
CONSERVATION_ATOL = 1e-4
LRP_ATTN_NAME = "attnscope_lrp"
_ACTIVATION = re.compile(r"(GELU|GeLU|SiLU|Swish|Tanh|ReLU|Mish|Activation)$")
_LAYER_LIST = re.compile(r"(^|\.)(layer|layers|h|block|blocks)$")


@dataclass(frozen=True)
class Conservation:
    """The conservation check of one AttnLRP result (module docstring): ``target_logit`` =
    ``input_relevance`` + Σ ``absorbed`` + ``residual``; ``ok`` when the residual is within
    ``rtol``·``scale`` + ``atol``. ``input_share`` = input_relevance / target_logit."""

    target_logit: float
    input_relevance: float
    absorbed: dict[str, float]
    residual: float
    scale: float
    ok: bool
    input_share: float
    rtol: float = CONSERVATION_RTOL
    atol: float = CONSERVATION_ATOL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str | None:
        """The loud one-line warning for a result that fails the check, else None."""
        if self.ok:
            return None
        return (f"ATTNLRP CONSERVATION FAILED: the target logit {self.target_logit:.4g} is not input relevance "
                f"{self.input_relevance:.4g} plus what biases, norms and softmax absorbed "
                f"({sum(self.absorbed.values()):.4g}); residual {self.residual:.4g}. An operation of this model has "
                "no LRP rule here; these scores are not AttnLRP relevances.")


def conservation(target_logit: float, input_relevance: float, absorbed: dict[str, float],
                 rtol: float = CONSERVATION_RTOL, atol: float = CONSERVATION_ATOL) -> Conservation:
    """Check ``target_logit = input_relevance + Σ absorbed`` within ``rtol``·scale + ``atol``."""
    residual = float(target_logit) - float(input_relevance) - float(sum(absorbed.values()))
    scale = abs(target_logit) + abs(input_relevance) + sum(abs(v) for v in absorbed.values())
    ok = bool(np.isfinite(residual) and abs(residual) <= rtol * scale + atol)
    share = float(input_relevance) / float(target_logit) if target_logit != 0 else float("nan")
    return Conservation(float(target_logit), float(input_relevance), {k: float(v) for k, v in absorbed.items()},
                        residual, float(scale), ok, share, rtol, atol)


# ---------------------------------------------------------------------------- rules (detach-based)
def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in the forward pass, gradient × ``factor`` in the backward pass (the uniform rule)."""
    return x * factor + (x * (1.0 - factor)).detach()


def _linear_part(y: torch.Tensor, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``y`` in the forward pass (bitwise), gradient ``slope`` (detached) w.r.t. ``x`` in the backward pass."""
    return y.detach() + (x - x.detach()) * slope.detach()


def _ratio(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y / x element-wise, 0 where x == 0 (there y == 0 for every rule that uses it)."""
    nz = x != 0
    return torch.where(nz, y / torch.where(nz, x, torch.ones_like(x)), torch.zeros_like(x))


@dataclass
class _Meter:
    """Tensors whose modified gradients give the absorbed relevance (module docstring)."""

    absorbing: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (kind, out, absorbed value)
    attention: list[tuple[torch.Tensor | None, ...]] = field(default_factory=list)  # (q, k, v, out, position bias)
    inputs: list[torch.Tensor] = field(default_factory=list)  # hidden states entering the first layer
    sides: list[str] = field(default_factory=list)  # per input: "input", or "source" / "target" (encoder-decoders)
    unsupported: list[str] = field(default_factory=list)


_METER: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("attnscope_lrp_meter", default=None)


def lrp_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """attnscope's registered attention with the uniform rule on q·kᵀ and p·v (gradients of q, k ÷ 4, v ÷ 2)."""
    from ..capture.interface import attnscope_attention

    meter = _METER.get()
    # this call's own nodes: with a KV cache, the cached key/value tensors are inputs of later calls as well,
    # and their gradient would mix every call's relevance
    query, key, value = query.view_as(query), key.view_as(key), value.view_as(value)
    bias = kwargs.get("position_bias")  # T5's relative position bias, added to the scores: absorbs like a bias
    if torch.is_tensor(bias) and bias.requires_grad:
        kwargs["position_bias"] = bias = bias.view_as(bias)
    else:
        bias = None
    out, w = attnscope_attention(module, scale_gradient(query, 0.25), scale_gradient(key, 0.25),
                                 scale_gradient(value, 0.5), attention_mask, *args, **kwargs)
    if meter is not None and out.requires_grad:
        meter.attention.append((query, key, value, out, bias))
    return out, w


def register_lrp_attention() -> str:
    """Register :func:`lrp_attention` (and SDPA's mask builder) under ``attnscope_lrp`` (idempotent)."""
    from ..capture.interface import register_attention_function

    return register_attention_function(LRP_ATTN_NAME, lrp_attention)


def _first_layer(model: torch.nn.Module) -> torch.nn.Module:
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) and _LAYER_LIST.search(name):
            return m[0]
    raise CaptureError(f"AttnLRP: cannot find the Transformer layers of {type(model).__name__}")


def _first_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(side, first layer): the encoder's ("source") and the decoder's ("target") of an encoder-decoder, else
    the one layer stack's ("input")."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return [("source", _first_layer(model.get_encoder())), ("target", _first_layer(model.get_decoder()))]
    return [("input", _first_layer(model))]


@contextlib.contextmanager
def lrp_rules(model: torch.nn.Module, meter: _Meter):
    """Install the AttnLRP rules on this model's instances (module docstring); removed on exit."""
    handles = []

    def norm_hook(module, inp, out):
        x = inp[0]
        if not torch.is_tensor(out) or not x.requires_grad:
            return None
        if isinstance(module, torch.nn.LayerNorm):
            xc = x - x.mean(-1, keepdim=True)  # (…, D) linear
            std = (xc.pow(2).mean(-1, keepdim=True) + module.eps).sqrt()
            slope = (module.weight / std) if module.weight is not None else 1.0 / std
            lin = xc * slope
            new = out.detach() + (xc - xc.detach()) * slope.detach()
        else:  # RMS-type: y = scale ⊙ x element-wise
            slope = _ratio(out, x)
            lin = x * slope
            new = _linear_part(out, x, slope)
        meter.absorbing.append(("norm", new, (out - lin).detach()))
        return new

    def act_hook(module, inp, out):
        x = inp[0]
        if not torch.is_tensor(out) or out.shape != x.shape or not x.requires_grad:
            return None
        slope = _ratio(out, x)
        new = _linear_part(out, x, slope)
        meter.absorbing.append(("activation", new, (out - x * slope).detach()))
        return new

    def linear_hook(module, inp, out):
        if out.requires_grad:
            meter.absorbing.append(("bias", out, module.bias.detach().expand_as(out)))

    def gated_pre_hook(module, args):
        return (scale_gradient(args[0], 0.5),) + tuple(args[1:])

    def input_pre_hook(side, module, args, kwargs):
        meter.sides.append(side)
        if args:
            h = args[0].detach().requires_grad_(True)
            meter.inputs.append(h)
            return (h,) + tuple(args[1:]), kwargs
        h = kwargs["hidden_states"].detach().requires_grad_(True)
        meter.inputs.append(h)
        return args, {**kwargs, "hidden_states": h}

    def logits_bias_hook(module, args, out):  # BART/Marian: logits = lm_head(h) + final_logits_bias
        logits = getattr(out, "logits", None)
        if torch.is_tensor(logits) and logits.requires_grad:
            meter.absorbing.append(("bias", logits, module.final_logits_bias.detach().expand_as(logits)))

    try:
        for side, layer in _first_layers(model):
            handles.append(layer.register_forward_pre_hook(functools.partial(input_pre_hook, side), with_kwargs=True))
        if torch.is_tensor(getattr(model, "final_logits_bias", None)):
            handles.append(model.register_forward_hook(logits_bias_hook))
        for name, m in model.named_modules():
            cls = type(m).__name__
            if isinstance(m, torch.nn.Linear) or cls == "Conv1D":  # Conv1D: GPT-2's transposed linear
                if getattr(m, "bias", None) is not None:
                    handles.append(m.register_forward_hook(linear_hook))
            elif isinstance(m, torch.nn.LayerNorm) or "RMSNorm" in cls or cls == "T5LayerNorm":
                handles.append(m.register_forward_hook(norm_hook))
            elif _ACTIVATION.search(cls) and not list(m.parameters()):
                handles.append(m.register_forward_hook(act_hook))
            if all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj")):
                handles.append(m.down_proj.register_forward_pre_hook(gated_pre_hook))
            elif all(hasattr(m, a) for a in ("wi_0", "wi_1", "wo")):  # T5 v1.1's gated feed-forward
                handles.append(m.wo.register_forward_pre_hook(gated_pre_hook))
        yield meter
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------- the method
@dataclass
class AttnLRPResult:
    """Token relevances of one prediction by AttnLRP. ``scores``: (N,) per token (signed; they sum to
    ``conservation.input_relevance``); ``hidden``: (N, D) relevance per hidden dimension."""

    tokens: list[str]
    special: list[bool]
    scores: np.ndarray
    hidden: np.ndarray
    target: int
    target_label: str
    logit: float
    conservation: Conservation
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "special": self.special, "scores": self.scores.tolist(),
                "target": self.target, "target_label": self.target_label, "logit": self.logit,
                "conservation": self.conservation.to_dict(), "meta": self.meta, "warnings": self.warnings}


@contextlib.contextmanager
def lrp_session(lm: LoadedModel):
    """Run forwards of ``lm`` inside this context with the AttnLRP rules (module docstring) and gradients on;
    yields the meter that :func:`account` reads. The model's attention implementation is restored on exit."""
    from ..capture.api import attention_implementation
    from .interventions import prepare

    prepare(lm)
    register_lrp_attention()
    if lm.model.training:
        raise InputError("AttnLRP needs the model in eval mode (call model.eval())")
    meter = _Meter()
    token = _METER.set(meter)
    try:
        with attention_implementation(lm.model, LRP_ATTN_NAME), lrp_rules(lm.model, meter), torch.enable_grad():
            yield meter
    finally:
        _METER.reset(token)


def account(meter: _Meter, y: torch.Tensor, retain_graph: bool = False) -> tuple[list[torch.Tensor], Conservation]:
    """Relevance of the scalar ``y`` (a logit computed inside :func:`lrp_session`) at every first-layer input
    the session saw — one (N_i, D) float64 tensor per forward call, e.g. the prompt then each token fed with the
    KV cache — and the :class:`Conservation` of ``y`` over all of them."""
    if not meter.inputs:
        raise CaptureError("AttnLRP: the first Transformer layer was never called")
    attn = [t_ for a in meter.attention for t_ in a[:4]]
    biases = [a[4] for a in meter.attention if a[4] is not None]
    outs = [o for _, o, _ in meter.absorbing]
    k = len(meter.inputs)
    grads = torch.autograd.grad(y, meter.inputs + outs + attn + biases, allow_unused=True, retain_graph=retain_graph)
    rel = [(h.detach().double() * g.double())[0] if g is not None else torch.zeros_like(h[0], dtype=torch.float64)
           for h, g in zip(meter.inputs, grads[:k])]  # each (N_i, D)
    g_abs, g_attn = grads[k:k + len(outs)], grads[k + len(outs):k + len(outs) + len(attn)]
    g_bias = iter(grads[k + len(outs) + len(attn):])
    absorbed = {"bias": 0.0, "norm": 0.0, "activation": 0.0, "softmax": 0.0}
    if biases:
        absorbed["position_bias"] = 0.0

    def r_of(x, g):
        return float((x.detach().double() * g.double()).sum()) if g is not None else 0.0

    for (kind, _, a), g in zip(meter.absorbing, g_abs):
        if g is not None:
            absorbed[kind] += float((a.double() * g.double()).sum())
    for i, tensors in enumerate(meter.attention):
        r = [r_of(x, g) for x, g in zip(tensors[:4], g_attn[4 * i:4 * i + 4])]
        r_b = r_of(tensors[4], next(g_bias)) if tensors[4] is not None else 0.0
        absorbed["softmax"] += r[3] - (r[0] + r[1] + r[2] + r_b)
        if tensors[4] is not None:
            absorbed["position_bias"] += r_b
    return rel, conservation(float(y.detach()), float(sum(float(r.sum()) for r in rel)), absorbed)


def by_side(meter: _Meter, rel: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The relevances of :func:`account` per side ("input", or "source" / "target"), each side's forward calls
    concatenated along the tokens: side -> (N, D) float64."""
    out: dict[str, list[torch.Tensor]] = {}
    for side, r in zip(meter.sides, rel):
        out.setdefault(side, []).append(r)
    return {k: torch.cat(v, 0) for k, v in out.items()}


def relevance(lm: LoadedModel, inputs: dict[str, torch.Tensor], target: int | str | None = None,
              position: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int, Conservation]:
    """AttnLRP relevance of the target logit for prepared model inputs (batch of 1).

    Returns (hidden-state relevance (N, D) float64, the logits (C,), the target index, the
    :class:`Conservation`). ``target``: class/token index or label (default the prediction)."""
    from .gradients import resolve_target
    from .interventions import output_logits

    kwargs = dict(inputs)
    if lm.kind == "causal":
        kwargs.setdefault("use_cache", False)
    with lrp_session(lm) as meter:
        logits = output_logits(lm, lm.model(**kwargs), position)[0]  # (C,)
        t, _ = resolve_target(lm, logits, target)
        rel, check = account(meter, logits[t])
    return rel[0], logits.detach(), t, check


def seq2seq_relevance(lm: LoadedModel, inputs: dict[str, torch.Tensor], target: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, Conservation]:
    """AttnLRP relevance of an encoder-decoder's next-token logit at the last decoder position (teacher-forced
    ``decoder_input_ids`` in ``inputs``, batch of 1), flowing to the source through cross-attention and the
    encoder, and to the target prefix through the decoder's self-attention.

    Returns (source relevance (S, D), target-prefix relevance (T, D), both float64 at the hidden states entering
    the first encoder / decoder layer, the logits (V,), the target index (default the argmax), the
    :class:`Conservation` over both sides)."""
    if not getattr(lm.config, "is_encoder_decoder", False):
        raise InputError(f"{lm.name} is not an encoder-decoder; use relevance() or attnlrp_attribution()")
    if "decoder_input_ids" not in inputs:
        raise InputError("give decoder_input_ids (the decoder start token, then the target prefix)")
    with lrp_session(lm) as meter:
        logits = lm.model(**inputs, use_cache=False).logits[0, -1]  # (V,)
        t = int(logits.argmax()) if target is None else int(target)
        if not 0 <= t < logits.shape[-1]:
            raise InputError(f"target {t} is out of range: {lm.name} has {logits.shape[-1]} outputs")
        rel, check = account(meter, logits[t])
    sides = by_side(meter, rel)
    return sides["source"], sides["target"], logits.detach(), t, check


def attnlrp_attribution(lm: LoadedModel, text: str, *, target: int | str | None = None, position: int | None = None,
            allow_random_head: bool = False) -> AttnLRPResult:
    """AttnLRP relevance (Achtibat et al. 2024) of one prediction's target logit, per input token, with the
    conservation check (:class:`Conservation`; module docstring).

    ``target``: class index/label (classifier) or token id/string (LM; default the predicted next token);
    ``position``: for LMs, which position's next-token logit (default the last). Works for models whose
    attention goes through transformers' AttentionInterface with LayerNorm/RMSNorm, element-wise activations
    and (gated) MLPs — the BERT and Llama families; any other operation on the path leaves a residual and
    fails the check, loudly (``warnings``)."""
    from .gradients import target_label
    from .interventions import encode

    if getattr(lm.config, "is_encoder_decoder", False):
        raise InputError(f"{lm.name} is an encoder-decoder: use seq2seq_attribution(lm, source, method='attnlrp') "
                         "(each generated token) or attnlrp.seq2seq_relevance(lm, inputs) (a teacher-forced target)")
    warnings = require_trained_head(lm, "AttnLRP", allow_random_head)
    inputs, tokens = encode(lm, text)
    rel, logits, t, check = relevance(lm, inputs, target, position)
    if check.warning():
        warnings.append(check.warning())
    return AttnLRPResult(tokens=tokens.labels(text), special=list(tokens.special), scores=rel.sum(-1).numpy(),
                         hidden=rel.numpy(), target=t, target_label=target_label(lm, t), logit=float(logits[t]),
                         conservation=check, meta={"model": lm.name, "text": text, "position": position},
                         warnings=warnings)
