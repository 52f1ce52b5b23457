"""Attribution of every token of a generation: which prompt and previously generated tokens (and, for
encoder-decoders, which source tokens) each generated token's logit depends on.

Each generated token is the greedy choice (argmax) of its step, and its logit is attributed to every token
the model saw at that step, assembled into one matrix: generated tokens × (prompt + previous generated
tokens), NaN where a token was not yet there. Methods:

- ``grad_x_input`` (gradient × input embedding, Shrikumar et al. 2016 / Denil et al. 2014) and ``attnlrp``
  (Achtibat et al. 2024, :mod:`.attnlrp`) run the generation **with the KV cache**: the cached keys and values
  keep their autograd graph, so the gradient of step t's logit reaches every earlier token through the cache,
  and one forward of one token per step suffices (each step's row equals a fresh attribution on the full
  prefix; tested). AttnLRP's relevance is taken at the first layer's input and checked for conservation at
  every step.
- ``integrated_gradients`` (Sundararajan et al. 2017) interpolates every input embedding, so no cache is
  valid: each step runs on the full prefix (the baseline of :mod:`.captum_methods`), checked for completeness.

:func:`generation_attribution` covers decoder-only language models; :func:`seq2seq_attribution` covers
encoder-decoders — transformers models (T5, Marian, …) and attnscope's own GRU :class:`~attnscope.seq2seq.model.Seq2Seq` —
with ``grad_x_input`` over source and target-prefix embeddings, decoder cache (or recurrent state) reused,
``integrated_gradients`` over both (one path per step, no cache), checked for completeness, and (transformers
models) ``attnlrp`` with the decoder cache, relevance at the first encoder and decoder layers' inputs, checked
for conservation over source and target together.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import CaptureError, InputError, UnknownNameError
from ..models import LoadedModel, require_trained_head
from .method_notes import note

GENERATION_METHODS = ("grad_x_input", "integrated_gradients", "attnlrp")
SEQ2SEQ_METHODS = ("grad_x_input", "integrated_gradients", "attnlrp")  # attnlrp: transformers models
MAX_NEW_TOKENS = 256


@dataclass
class GenerationAttribution:
    """Per generated token, the attribution of its logit to the tokens before it.

    ``scores``: (G, P + G − 1) float64, row i = generated token i, columns = ``context_tokens`` (prompt, or the
    decoder start token, then the generated tokens but the last); NaN where column ≥ P + i (not yet there).
    ``source_scores``: (G, S) for encoder-decoders, else None. ``checks``: per step, the method's own check
    (``{"check", "ok", ...}``) or empty; ``failed_steps``: steps whose check failed."""

    model: str
    method: str
    prompt_tokens: list[str]
    generated_tokens: list[str]
    generated_ids: list[int]
    scores: np.ndarray
    target_logits: list[float]
    probabilities: list[float]
    source_tokens: list[str] = field(default_factory=list)
    source_scores: np.ndarray | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def context_tokens(self) -> list[str]:
        return self.prompt_tokens + self.generated_tokens[:-1]

    @property
    def note(self) -> str:
        """What the method is and is not (:mod:`.method_notes`)."""
        return note(self.method)

    @property
    def failed_steps(self) -> list[int]:
        return [i for i, c in enumerate(self.checks) if c and not c["ok"]]

    def to_dict(self) -> dict[str, Any]:
        def rows(a):
            return None if a is None else [[None if not np.isfinite(v) else float(v) for v in r] for r in a]

        return {"model": self.model, "method": self.method, "note": self.note, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens, "generated_ids": self.generated_ids,
                "context_tokens": self.context_tokens, "scores": rows(self.scores),
                "source_tokens": self.source_tokens, "source_scores": rows(self.source_scores),
                "target_logits": self.target_logits, "probabilities": self.probabilities, "checks": self.checks,
                "failed_steps": self.failed_steps, "warnings": self.warnings, "meta": self.meta}


def _check_args(method: str, methods: Sequence[str], max_new_tokens: int) -> None:
    if method not in methods:
        raise UnknownNameError("generation attribution method", method, methods)
    if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens must be 1..{MAX_NEW_TOKENS}, got {max_new_tokens}")


def _eos_ids(lm_model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for v in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(lm_model, "generation_config", None),
                                                                 "eos_token_id", None)):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return ids


@contextlib.contextmanager
def _embedding_leaves(modules: Sequence[torch.nn.Module], sink):
    """Make each output of these embedding modules a leaf that requires grad; ``sink(leaf)`` records it."""
    def hook(module, inp, out):
        leaf = out.detach().requires_grad_(True)
        sink(leaf)
        return leaf

    handles = [m.register_forward_hook(hook) for m in {id(m): m for m in modules}.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _row(leaves: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Σ_d leaf ⊙ grad per token, the leaves' tokens concatenated: (N,) float64."""
    return torch.cat([(leaf.detach().double() * (g.double() if g is not None else 0.0)).sum(-1).reshape(-1)
                      for leaf, g in zip(leaves, grads)])


def _labels(tokenizer, ids: Sequence[int]) -> list[str]:
    from ..trace import Tokens

    return Tokens([str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))], ids=list(ids)).labels()


def _assemble(rows: list[torch.Tensor], n_prompt: int) -> np.ndarray:
    g = len(rows)
    out = np.full((g, n_prompt + g - 1), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r.cpu().numpy()
    return out


# ---------------------------------------------------------------------------- decoder-only LMs
def generation_attribution(lm: LoadedModel, prompt: str, max_new_tokens: int = 8, method: str = "grad_x_input", *,
                           ig_steps: int = 32, ig_max_steps: int | None = None, stop_at_eos: bool = True,
                           allow_random_head: bool = False) -> GenerationAttribution:
    """Generate up to ``max_new_tokens`` tokens greedily after ``prompt`` and attribute each one's logit to the
    prompt and the tokens generated before it (module docstring; ``method`` in :data:`GENERATION_METHODS`).
    Stops after an end-of-sequence token when ``stop_at_eos``."""
    from .interventions import encode, prepare

    _check_args(method, GENERATION_METHODS, max_new_tokens)
    if lm.kind != "causal":
        raise InputError(f"{lm.name} is not a decoder-only language model ({lm.kind}); use seq2seq_attribution for "
                         "encoder-decoders")
    warnings = require_trained_head(lm, "generation attribution", allow_random_head)
    inputs, toks = encode(lm, prompt)
    ids = inputs["input_ids"][:, :]  # (1, P)
    eos = _eos_ids(lm.model, lm.tokenizer) if stop_at_eos else set()
    prepare(lm)
    if method == "integrated_gradients":
        rows, gen, logits, checks = _ig_steps(lm, ids, list(toks.special), max_new_tokens, eos, ig_steps, ig_max_steps)
    else:
        rows, gen, logits, checks = _cached_steps(lm, ids, max_new_tokens, eos, method)
    for i, c in enumerate(checks):
        if c and not c["ok"]:
            warnings.append(f"step {i} ({_labels(lm.tokenizer, [gen[i]])[0]!r}): {c['warning']}")
    return GenerationAttribution(
        model=lm.name, method=method, prompt_tokens=toks.labels(prompt), generated_tokens=_labels(lm.tokenizer, gen),
        generated_ids=gen, scores=_assemble(rows, ids.shape[1]), target_logits=[float(v[0]) for v in logits],
        probabilities=[float(v[1]) for v in logits], checks=checks, warnings=warnings,
        meta={"prompt": prompt, "kv_cache": method != "integrated_gradients", "max_new_tokens": max_new_tokens})


def _ig_seq2seq_step(f, x: torch.Tensor, xb: torch.Tensor, target: int, step: int, n_source: int, ig_steps: int,
                     ig_max_steps: int | None, src_rows: list, rows: list, logits_out: list, checks: list,
                     warnings: list) -> None:
    """One generated token of an encoder-decoder: integrated gradients of its logit over the source and
    target-prefix embeddings x (1, S + i + 1, D) from xb, split into source and target rows, with the
    completeness check (a failed step is named in ``warnings``)."""
    from .captum_methods import integrated_gradients

    with torch.no_grad():
        logits = f(x)[0]  # (V,)
    attr, check = integrated_gradients(f, x, xb, target, n_steps=ig_steps,
                                       max_steps=8 * ig_steps if ig_max_steps is None else ig_max_steps)
    r = attr.sum(-1)[0].double()  # (S + i + 1,)
    src_rows.append(r[:n_source])
    rows.append(r[n_source:])
    logits_out.append(_step_out(logits)[1])
    checks.append({"check": "completeness", "ok": check.ok, "delta": check.delta,
                   "relative_error": check.relative_error, "warning": check.warning()})
    if check.warning():
        warnings.append(f"step {step}: {check.warning()}")


def _step_out(logits: torch.Tensor) -> tuple[int, tuple[float, float]]:
    t = int(logits.argmax())
    p = torch.softmax(logits.detach().double(), -1)[t]
    return t, (float(logits[t].detach()), float(p))


def _cached_steps(lm: LoadedModel, ids: torch.Tensor, n: int, eos: set[int], method: str):
    """grad_x_input / attnlrp, one token per forward with the KV cache (its tensors keep their graph)."""
    from ..capture.api import attention_implementation
    from .attnlrp import account, lrp_session

    leaves: list[torch.Tensor] = []
    rows, gen, logits_out, checks = [], [], [], []
    if method == "attnlrp":
        ctx = lrp_session(lm)
    else:
        ctx = contextlib.ExitStack()
        ctx.enter_context(_embedding_leaves([lm.model.get_input_embeddings()], leaves.append))
        ctx.enter_context(attention_implementation(lm.model, "attnscope"))
        ctx.enter_context(torch.enable_grad())
    with ctx as meter:
        out = lm.model(input_ids=ids, use_cache=True)
        for step in range(n):
            logits = out.logits[0, -1]  # (V,)
            t, lp = _step_out(logits)
            if method == "attnlrp":
                rel, check = account(meter, logits[t], retain_graph=True)
                rows.append(torch.cat([r.sum(-1) for r in rel]))
                checks.append({"check": "conservation", "ok": check.ok, "residual": check.residual,
                               "input_share": check.input_share, "absorbed": check.absorbed,
                               "warning": check.warning()})
            else:
                rows.append(_row(leaves, torch.autograd.grad(logits[t], leaves, retain_graph=True)))
                checks.append({})
            gen.append(t)
            logits_out.append(lp)
            if t in eos or step == n - 1:
                break
            out = lm.model(input_ids=torch.tensor([[t]], device=ids.device), past_key_values=out.past_key_values,
                           use_cache=True)
    return rows, gen, logits_out, checks


def _ig_steps(lm: LoadedModel, ids: torch.Tensor, special: list[bool], n: int, eos: set[int], ig_steps: int,
              ig_max_steps: int | None):
    """Integrated gradients per step on the full prefix (no cache is valid for a path over all embeddings)."""
    from .captum_methods import _baseline_ids, _forward, baseline_fixed, integrated_gradients

    with torch.no_grad():
        out = lm.model(input_ids=ids, use_cache=True)
        gen = []
        for step in range(n):
            t = int(out.logits[0, -1].argmax())
            gen.append(t)
            if t in eos or step == n - 1:
                break
            out = lm.model(input_ids=torch.tensor([[t]], device=ids.device), past_key_values=out.past_key_values,
                           use_cache=True)
    emb = lm.model.get_input_embeddings()
    fixed0 = baseline_fixed(lm, special)
    rows, logits_out, checks = [], [], []
    for i, t in enumerate(gen):
        prefix = torch.cat([ids, torch.tensor([gen[:i]], dtype=ids.dtype, device=ids.device)], 1)  # (1, P + i)
        fixed = fixed0 + [False] * i
        f = _forward(lm, {"input_ids": prefix}, None, "inputs_embeds")
        with torch.no_grad():
            x, xb = emb(prefix).detach(), emb(_baseline_ids(lm, prefix, fixed)).detach()  # (1, N, D)
            logits = f(x)[0]
        attr, check = integrated_gradients(f, x, xb, t, n_steps=ig_steps,
                                           max_steps=8 * ig_steps if ig_max_steps is None else ig_max_steps)
        rows.append(attr.sum(-1)[0].double())
        logits_out.append(_step_out(logits)[1])
        checks.append({"check": "completeness", "ok": check.ok, "delta": check.delta,
                       "relative_error": check.relative_error, "warning": check.warning()})
    return rows, gen, logits_out, checks


# ---------------------------------------------------------------------------- encoder-decoders
def seq2seq_attribution(model, source: str | Sequence[int], max_new_tokens: int = 8, method: str = "grad_x_input", *,
                        source_labels: Sequence[str] | None = None, target_vocab: Sequence[str] | None = None,
                        ig_steps: int = 32, ig_max_steps: int | None = None, stop_at_eos: bool = True,
                        allow_random_head: bool = False) -> GenerationAttribution:
    """Greedy generation of an encoder-decoder, each generated token's logit attributed to the source tokens
    (``source_scores``) and to the target prefix (``scores``: decoder start token + previous generated tokens),
    by gradient × input embedding, reusing the decoder's cache (transformers) or recurrent state (GRU).

    ``model``: a :class:`LoadedModel` of a transformers encoder-decoder (``source`` a text), or an attnscope
    :class:`~attnscope.seq2seq.model.Seq2Seq` (``source`` a list of source ids ending with ``</s>``;
    ``source_labels`` / ``target_vocab`` name the ids, default their numbers).

    ``method="integrated_gradients"``: each step on the full source and target prefix, one straight path over
    both from the baseline (source tokens but the special ones, and the generated tokens, replaced by the
    padding token; the decoder start token kept), checked for completeness. For the GRU ``Seq2Seq`` the special
    source tokens are ``<s>`` and ``</s>``, and the padding token's embedding is the zero vector (``padding_idx``)."""
    from ..seq2seq.model import Seq2Seq

    _check_args(method, SEQ2SEQ_METHODS, max_new_tokens)
    if isinstance(model, Seq2Seq):
        if method == "attnlrp":
            raise InputError("AttnLRP has no rules for the GRU seq2seq (a recurrent model); use grad_x_input or "
                             "integrated_gradients")
        if method == "integrated_gradients":
            return _gru_ig(model, list(source), max_new_tokens, source_labels, target_vocab, stop_at_eos, ig_steps,
                           ig_max_steps)
        return _gru_steps(model, list(source), max_new_tokens, source_labels, target_vocab, stop_at_eos)
    if not isinstance(model, LoadedModel) or not getattr(model.config, "is_encoder_decoder", False):
        raise InputError("seq2seq_attribution needs an encoder-decoder: a transformers model loaded with load_model "
                         "(T5, Marian, …) or an attnscope seq2seq.Seq2Seq; use generation_attribution for "
                         "decoder-only language models")
    if not isinstance(source, str):
        raise InputError("give the source as a text for a transformers encoder-decoder")
    return _hf_seq2seq_steps(model, source, max_new_tokens, stop_at_eos,
                             require_trained_head(model, "generation attribution", allow_random_head),
                             method, ig_steps, ig_max_steps)


def _hf_seq2seq_steps(lm: LoadedModel, source: str, n: int, stop_at_eos: bool, warnings: list[str],
                      method: str = "grad_x_input", ig_steps: int = 32, ig_max_steps: int | None = None):
    from ..capture.api import attention_implementation, check_text
    from ..devices import model_inputs
    from .interventions import prepare

    enc_in = model_inputs(dict(lm.tokenizer(check_text(source), return_tensors="pt")), lm.model)
    src, mask = enc_in["input_ids"], enc_in.get("attention_mask")  # (1, S)
    start = lm.model.config.decoder_start_token_id
    if start is None:
        raise InputError(f"{lm.name} has no decoder_start_token_id in its config")
    eos = _eos_ids(lm.model, lm.tokenizer) if stop_at_eos else set()
    encoder, decoder = lm.model.get_encoder(), lm.model.get_decoder()
    leaves: dict[str, list[torch.Tensor]] = {"source": [], "target": []}
    phase = ["source"]
    prepare(lm)
    if method == "integrated_gradients":
        return _hf_seq2seq_ig(lm, source, src, mask, start, n, eos, warnings, ig_steps, ig_max_steps)
    from .attnlrp import account, by_side, lrp_session

    src_rows, rows, gen, logits_out, checks = [], [], [], [], []
    if method == "attnlrp":  # relevance at the hidden states entering the first encoder / decoder layer
        ctx = lrp_session(lm)
    else:
        ctx = contextlib.ExitStack()
        ctx.enter_context(_embedding_leaves([encoder.embed_tokens, decoder.embed_tokens],
                                            lambda x: leaves[phase[0]].append(x)))
        ctx.enter_context(attention_implementation(lm.model, "attnscope"))
        ctx.enter_context(torch.enable_grad())
    with ctx as meter:
        enc = encoder(input_ids=src, attention_mask=mask)
        phase[0] = "target"
        y = torch.tensor([[start]], device=src.device)
        out = lm.model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=y, use_cache=True)
        for step in range(n):
            logits = out.logits[0, -1]  # (V,)
            t, lp = _step_out(logits)
            if method == "attnlrp":
                rel, check = account(meter, logits[t], retain_graph=True)
                sides = by_side(meter, rel)
                src_rows.append(sides["source"].sum(-1))
                rows.append(sides["target"].sum(-1))
                checks.append({"check": "conservation", "ok": check.ok, "residual": check.residual,
                               "input_share": check.input_share, "absorbed": check.absorbed,
                               "warning": check.warning()})
            else:
                grads = torch.autograd.grad(logits[t], leaves["source"] + leaves["target"], retain_graph=True)
                src_rows.append(_row(leaves["source"], grads[:1]))
                rows.append(_row(leaves["target"], grads[1:]))
                checks.append({})
            gen.append(t)
            logits_out.append(lp)
            if t in eos or step == n - 1:
                break
            out = lm.model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=torch.tensor([[t]], device=src.device),
                           past_key_values=out.past_key_values, use_cache=True)
    for i, c in enumerate(checks):
        if c and not c["ok"]:
            warnings.append(f"step {i} ({_labels(lm.tokenizer, [gen[i]])[0]!r}): {c['warning']}")
    return GenerationAttribution(
        model=lm.name, method=method, prompt_tokens=_labels(lm.tokenizer, [start]),
        generated_tokens=_labels(lm.tokenizer, gen), generated_ids=gen, scores=_assemble(rows, 1),
        target_logits=[v[0] for v in logits_out], probabilities=[v[1] for v in logits_out],
        source_tokens=_labels(lm.tokenizer, src[0].tolist()),
        source_scores=torch.stack(src_rows).cpu().numpy(), checks=checks, warnings=warnings,
        meta={"source": source, "kv_cache": True, "max_new_tokens": n})


def _hf_seq2seq_ig(lm: LoadedModel, source: str, src: torch.Tensor, mask, start: int, n: int, eos: set[int],
                   warnings: list[str], ig_steps: int, ig_max_steps: int | None) -> GenerationAttribution:
    """Integrated gradients per step over [source embeddings; target-prefix embeddings] (one path)."""
    from .captum_methods import baseline_token_id

    encoder, decoder = lm.model.get_encoder(), lm.model.get_decoder()
    modules = list({id(m): m for m in (encoder.embed_tokens, decoder.embed_tokens)}.values())
    with torch.no_grad():  # the greedy generation, with the cache
        enc = encoder(input_ids=src, attention_mask=mask)
        out = lm.model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=torch.tensor([[start]], device=src.device),
                       use_cache=True)
        gen = []
        for step in range(n):
            t = int(out.logits[0, -1].argmax())
            gen.append(t)
            if t in eos or step == n - 1:
                break
            out = lm.model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=torch.tensor([[t]], device=src.device),
                           past_key_values=out.past_key_values, use_cache=True)
    pad = baseline_token_id(lm.tokenizer)
    keep = torch.tensor(lm.tokenizer.get_special_tokens_mask(src[0].tolist(), already_has_special_tokens=True),
                        dtype=torch.bool, device=src.device)
    src_base = torch.where(keep, src[0], torch.full_like(src[0], pad))[None]  # (1, S)
    S = src.shape[1]
    src_rows, rows, logits_out, checks = [], [], [], []
    for i, t in enumerate(gen):
        prefix = torch.tensor([[start] + gen[:i]], device=src.device)  # (1, i + 1)
        prefix_base = torch.tensor([[start] + [pad] * i], device=src.device)
        queue: list[torch.Tensor] = []

        def substitute(module, inp, out):
            return queue.pop(0)

        def f(z: torch.Tensor) -> torch.Tensor:  # z (B, S + i + 1, D) -> target logits (B, V)
            b = z.shape[0]
            queue[:] = [z[:, :S], z[:, S:]]
            hs = [m.register_forward_hook(substitute) for m in modules]
            try:
                return lm.model(input_ids=src.expand(b, -1), attention_mask=None if mask is None else mask.expand(b, -1),
                                decoder_input_ids=prefix.expand(b, -1), use_cache=False).logits[:, -1]
            finally:
                for h in hs:
                    h.remove()

        with torch.no_grad():
            x = torch.cat([encoder.embed_tokens(src), decoder.embed_tokens(prefix)], 1)  # (1, S + i + 1, D)
            xb = torch.cat([encoder.embed_tokens(src_base), decoder.embed_tokens(prefix_base)], 1)
        _ig_seq2seq_step(f, x, xb, t, i, S, ig_steps, ig_max_steps, src_rows, rows, logits_out, checks, warnings)
    return GenerationAttribution(
        model=lm.name, method="integrated_gradients", prompt_tokens=_labels(lm.tokenizer, [start]),
        generated_tokens=_labels(lm.tokenizer, gen), generated_ids=gen, scores=_assemble(rows, 1),
        target_logits=[v[0] for v in logits_out], probabilities=[v[1] for v in logits_out],
        source_tokens=_labels(lm.tokenizer, src[0].tolist()), source_scores=torch.stack(src_rows).cpu().numpy(),
        checks=checks, warnings=warnings, meta={"source": source, "kv_cache": False, "max_new_tokens": n})


def _gru_source(model, source: list[int]) -> torch.Tensor:
    if not source:
        raise InputError("the source is empty; give source token ids ending with </s>")
    v = model.cfg.src_vocab
    bad = [i for i in source if not 0 <= int(i) < v]
    if bad:
        raise InputError(f"source id {bad[0]} is out of range: the model's source vocabulary has ids 0..{v - 1}")
    model.eval()
    dev = next(model.parameters()).device
    return torch.tensor([source], dtype=torch.long, device=dev)  # (1, S)


def _gru_result(model, method: str, source: list[int], gen: list[int], rows, src_rows, logits_out, checks,
                source_labels, target_vocab, warnings: list[str], meta: dict[str, Any]) -> GenerationAttribution:
    from ..seq2seq.data import BOS_ID

    def name(vocab, i):
        return str(vocab[i]) if vocab is not None and 0 <= i < len(vocab) else str(i)

    return GenerationAttribution(
        model=type(model).__name__, method=method, prompt_tokens=[name(target_vocab, BOS_ID)],
        generated_tokens=[name(target_vocab, t) for t in gen], generated_ids=gen, scores=_assemble(rows, 1),
        target_logits=[v[0] for v in logits_out], probabilities=[v[1] for v in logits_out],
        source_tokens=list(source_labels) if source_labels is not None else [str(i) for i in source],
        source_scores=torch.stack(src_rows).cpu().numpy(), checks=checks, warnings=warnings, meta=meta)


def _gru_steps(model, source: list[int], n: int, source_labels, target_vocab, stop_at_eos: bool):
    from ..seq2seq.data import BOS_ID, EOS_ID

    src = _gru_source(model, source)  # (1, S)
    mask = torch.ones_like(src, dtype=torch.bool)
    leaves: list[torch.Tensor] = []
    src_rows, rows, gen, logits_out = [], [], [], []
    with _embedding_leaves([model.encoder.embed, model.decoder.embed], leaves.append), torch.enable_grad():
        memory, state, cache = model.encode(src, mask)
        y = BOS_ID
        for step in range(n):
            logits, state, _ = model.decoder.step(torch.tensor([y], device=src.device), state, memory, mask,
                                                  cache)  # (1, V)
            t, lp = _step_out(logits[0])
            grads = torch.autograd.grad(logits[0, t], leaves, retain_graph=True)
            src_rows.append(_row(leaves[:1], grads[:1]))
            rows.append(_row(leaves[1:], grads[1:]))
            gen.append(t)
            logits_out.append(lp)
            y = t
            if (stop_at_eos and t == EOS_ID) or step == n - 1:
                break
    return _gru_result(model, "grad_x_input", source, gen, rows, src_rows, logits_out, [{} for _ in gen],
                       source_labels, target_vocab, [], {"kv_cache": False, "recurrent_state": True,
                                                         "max_new_tokens": n})


def _gru_ig(model, source: list[int], n: int, source_labels, target_vocab, stop_at_eos: bool, ig_steps: int,
            ig_max_steps: int | None) -> GenerationAttribution:
    """Integrated gradients (Sundararajan et al. 2017) per generated token of the GRU seq2seq: one straight path
    over [source embeddings; target-prefix embeddings] from the baseline (source tokens but ``<s>``/``</s>``,
    and the generated prefix, replaced by ``<pad>``, whose embedding is zero; ``<s>`` starting the target kept),
    the function being the teacher-forced logit of the step's greedy token; checked for completeness."""
    from ..seq2seq.data import BOS_ID, EOS_ID, PAD_ID

    src = _gru_source(model, source)  # (1, S)
    S = src.shape[1]
    mask = torch.ones_like(src, dtype=torch.bool)
    with torch.no_grad():  # the greedy generation, recurrent state carried
        memory, state, cache = model.encode(src, mask)
        y, gen = BOS_ID, []
        for step in range(n):
            logits, state, _ = model.decoder.step(torch.tensor([y], device=src.device), state, memory, mask, cache)
            y = int(logits[0].argmax())
            gen.append(y)
            if (stop_at_eos and y == EOS_ID) or step == n - 1:
                break
    keep = (src[0] == BOS_ID) | (src[0] == EOS_ID)  # (S,)
    src_base = torch.where(keep, src[0], torch.full_like(src[0], PAD_ID))[None]  # (1, S)
    src_rows, rows, logits_out, checks, warnings = [], [], [], [], []
    for i, t in enumerate(gen):
        prefix = torch.tensor([[BOS_ID] + gen[:i]], device=src.device)  # (1, i + 1)
        prefix_base = torch.tensor([[BOS_ID] + [PAD_ID] * i], device=src.device)
        queue: list[torch.Tensor] = []

        def substitute(module, inp, out):
            return queue.pop(0)

        def f(z: torch.Tensor) -> torch.Tensor:  # z (B, S + i + 1, E) -> logits of the last step (B, V)
            b = z.shape[0]
            queue[:] = [z[:, :S]] + [z[:, S + j] for j in range(i + 1)]  # encoder: (B, S, E); each step: (B, E)
            hs = [model.encoder.embed.register_forward_hook(substitute),
                  model.decoder.embed.register_forward_hook(substitute)]
            try:
                logits, _ = model(src.expand(b, -1), mask.expand(b, -1), prefix.expand(b, -1))  # (B, i + 1, V)
            finally:
                for h in hs:
                    h.remove()
            if queue:
                raise CaptureError("GRU seq2seq: the forward did not embed each source and target position once")
            return logits[:, -1]

        with torch.no_grad():
            x = torch.cat([model.encoder.embed(src), model.decoder.embed(prefix)], 1)  # (1, S + i + 1, E)
            xb = torch.cat([model.encoder.embed(src_base), model.decoder.embed(prefix_base)], 1)
        _ig_seq2seq_step(f, x, xb, t, i, S, ig_steps, ig_max_steps, src_rows, rows, logits_out, checks, warnings)
    return _gru_result(model, "integrated_gradients", source, gen, rows, src_rows, logits_out, checks, source_labels,
                       target_vocab, warnings, {"kv_cache": False, "recurrent_state": False, "max_new_tokens": n})
