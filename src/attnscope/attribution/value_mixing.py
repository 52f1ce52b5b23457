"""Value-side recording and the decomposition of an attention block into one vector per (query, key) pair,
shared by the value-aware methods (:mod:`.value_norms`, :mod:`.block_mixing`, :mod:`.globenc`, :mod:`.alti`,
:mod:`.alti_logit`).

An attention block's output for query ``i`` is a sum over keys ``j`` of vectors (Kobayashi et al., 2020,
"Attention is Not Only a Weight: Analyzing Transformers with Vector Norms", EMNLP)::

    attn_i = Σ_j Σ_h α^h_ij f_h(x_j) + b_O,      f_h(x_j) = v^h_j W_O^h   (value incl. its bias, times
                                                                       head h's slice of the output projection)

With the residual ``x_i`` added to the ``j = i`` term and the layer norm that follows decomposed linearly
(its per-row scale 1/σ_i taken from the forward), the block's output is ``y_i = Σ_j T_i(x_j) + bias terms``
(Kobayashi et al., 2021, EMNLP; Ferrando et al., 2022, EMNLP). The methods differ in what they read from
the ``T_i(x_j)``.

How it is computed: two forwards through attnscope's registered attention function (SDPA output, never the
eager kernel). The first records, with forward pre-hooks, each layer's input ``x`` and the inputs of the
layer norms (their σ); the second hands each layer's value tensor and its attention probabilities, block by
block over query rows, to a :class:`ValueRecorder`, which reduces each block at once to the (query, key)
numbers the methods need. Memory: the transformed value vectors ``f_h`` of one layer (H·N·d) while that layer
runs, and sub-blocks of (rows × N × d) floats; no (N × N × d) tensor is ever held.

Supported: BERT-family encoders (post-layer-norm: BERT, RoBERTa, ELECTRA, MiniLM) and decoder-only models of
the Llama family (pre-RMSNorm, grouped-query attention: Llama, Mistral, Qwen2, SmolLM2) and GPT-2. Encoder-
decoder models (cross-attention) are refused with a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from ..capture.api import attention_implementation
from ..capture.interface import CaptureSession, session_scope
from ..capture.recorders import Recorder
from ..devices import model_inputs
from ..errors import CaptureError, InputError
from ..models import LoadedModel
from .interventions import encode, output_logits, prepare, run_with_interventions

# Elements of one (B, rows, Nk, d) sub-block of mixed vectors: 4M float32 = 16 MB.
SUB_BLOCK_ELEMENTS = 1 << 22
OUTPUTS = ("head_norms", "sum_norms", "resln_norms", "globenc", "alti", "logit")


@dataclass
class LayerParts:
    """The modules of one transformer layer a decomposition needs."""

    layer: int
    container: torch.nn.Module  # the transformer layer (its input is the residual stream x)
    attention: torch.nn.Module  # the module the attention function is called with
    w_o: torch.Tensor  # (d, H*Dv) output projection
    b_o: torch.Tensor | None  # (d,)
    ln1: torch.nn.Module | None = None  # post-LN only: norm after attention + residual
    ln2: torch.nn.Module | None = None  # post-LN only: norm after feed-forward + residual


@dataclass
class ModelParts:
    style: str  # "post_ln" (BERT family) or "pre_ln" (Llama family, GPT-2)
    layers: dict[int, LayerParts]
    final_norm: torch.nn.Module | None  # pre-LN: the norm before the LM head


def _containers(model: torch.nn.Module) -> dict[int, tuple[str, torch.nn.Module]]:
    """layer index -> (name, module) of the transformer layers: the modules whose name ends at its first
    integer component (``bert.encoder.layer.3``, ``model.layers.3``, ``transformer.h.3``)."""
    out = {}
    for name, m in model.named_modules():
        parts = name.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit()]
        if digits and digits[0] == len(parts) - 1:
            out[int(parts[-1])] = (name, m)
    return out


def model_parts(lm: LoadedModel, method: str) -> ModelParts:
    """Find each layer's attention, output projection and norms; a one-line error for other architectures."""
    if lm.kind not in ("encoder", "causal"):
        raise InputError(f"{method} supports encoder-only and decoder-only models; {lm.name} is {lm.kind} "
                         "(cross-attention is not decomposed yet); use attention, rollout or value_zeroing")
    containers = _containers(lm.model)
    if not containers:
        raise InputError(f"{method}: cannot find the transformer layers of {lm.name} ({type(lm.model).__name__})")
    layers: dict[int, LayerParts] = {}
    styles = set()
    for idx, (_, c) in sorted(containers.items()):
        att = getattr(c, "self_attn", None)
        if att is not None and hasattr(att, "o_proj") and hasattr(c, "input_layernorm"):  # Llama family
            layers[idx] = LayerParts(idx, c, att, att.o_proj.weight, att.o_proj.bias)
            styles.add("pre_ln")
        elif hasattr(c, "attn") and hasattr(c.attn, "c_proj") and hasattr(c, "ln_1"):  # GPT-2 (Conv1D: (in, out))
            layers[idx] = LayerParts(idx, c, c.attn, c.attn.c_proj.weight.t(), c.attn.c_proj.bias)
            styles.add("pre_ln")
        elif (hasattr(c, "attention") and hasattr(c.attention, "self") and hasattr(c.attention, "output")
              and hasattr(c.attention.output, "LayerNorm") and hasattr(getattr(c, "output", None), "LayerNorm")):
            d = c.attention.output.dense  # BERT family (post-LN)
            layers[idx] = LayerParts(idx, c, c.attention.self, d.weight, d.bias, c.attention.output.LayerNorm,
                                     c.output.LayerNorm)
            styles.add("post_ln")
        else:
            raise InputError(f"{method} supports BERT-family encoders and Llama-family / GPT-2 decoders; "
                             f"{type(lm.model).__name__} layer {idx} has another structure")
    if len(styles) != 1:
        raise InputError(f"{method}: {lm.name} mixes layer structures; not supported")
    style = styles.pop()
    base = getattr(lm.model, "base_model", lm.model)
    final = None
    if style == "pre_ln":
        final = getattr(base, "norm", None)
        final = final if final is not None else getattr(base, "ln_f", None)
    return ModelParts(style, layers, final)


def _norm_scale(norm: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The per-row scale 1/σ a norm module applies to ``x`` (B, N, d) -> (B, N), and whether it centres
    (LayerNorm) or not (RMSNorm)."""
    eps = getattr(norm, "eps", None)
    if eps is None:
        eps = getattr(norm, "variance_epsilon", 1e-6)
    x = x.double()
    if isinstance(norm, torch.nn.LayerNorm):
        return torch.rsqrt(x.var(-1, unbiased=False) + eps), True
    return torch.rsqrt(x.pow(2).mean(-1) + eps), False


@dataclass
class Context:
    """What the first forward recorded: the residual stream entering each layer and the norms' inputs."""

    x: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, N, d) layer input
    ln1_in: dict[int, torch.Tensor] = field(default_factory=dict)  # post-LN: (B, N, d)
    ln2_in: dict[int, torch.Tensor] = field(default_factory=dict)
    final_in: torch.Tensor | None = None  # pre-LN: (B, N, d) input of the final norm
    modules: dict[int, torch.nn.Module] = field(default_factory=dict)  # layer -> module the attention ran with
    output: Any = None


def _first_tensor(args, kwargs, name: str = "hidden_states") -> torch.Tensor:
    return (args[0] if args else kwargs[name]).detach()


def record_context(lm: LoadedModel, inputs: dict, parts: ModelParts) -> Context:
    """Forward 1: layer inputs and norm inputs (forward pre-hooks), the attention module of each layer."""
    ctx = Context()
    handles = []

    def keep(store: dict, idx: int):
        def hook(_m, args, kwargs):
            store[idx] = _first_tensor(args, kwargs)
        return hook

    for idx, p in parts.layers.items():
        handles.append(p.container.register_forward_pre_hook(keep(ctx.x, idx), with_kwargs=True))
        if p.ln1 is not None:
            handles.append(p.ln1.register_forward_pre_hook(keep(ctx.ln1_in, idx), with_kwargs=True))
            handles.append(p.ln2.register_forward_pre_hook(keep(ctx.ln2_in, idx), with_kwargs=True))
    final: dict = {}
    if parts.final_norm is not None:
        handles.append(parts.final_norm.register_forward_pre_hook(keep(final, 0), with_kwargs=True))

    def on_call(site, module):
        if site.stream == "self":
            ctx.modules[site.layer] = module

    try:
        ctx.output = run_with_interventions(lm, inputs, (), on_call=on_call)
    finally:
        for h in handles:
            h.remove()
    ctx.final_in = final.get(0)
    for idx, p in parts.layers.items():
        if ctx.modules.get(idx) is not p.attention:
            raise InputError(f"layer {idx} of {lm.name} did not run its attention through the module attnscope "
                             "expected; this architecture is not supported by the value-aware methods")
    return ctx


class ValueRecorder(Recorder):
    """A recorder that also receives each site's value tensor (B, Hkv, Nk, Dv) (the attention function calls
    ``add_values`` before the probability blocks) and reduces every probability block at once with
    ``reducer(site, probs (B, H, bq, Nk), query_positions, key_offset) -> dict of (…, bq, Nk) tensors``."""

    payload = "values"

    def __init__(self, reducer: "Decomposer") -> None:
        super().__init__()
        self.reducer = reducer

    def add_values(self, site, value: torch.Tensor, module: torch.nn.Module) -> None:
        self.reducer.set_values(site, value)

    def add_block(self, site, block, query_positions, key_offset=0):
        out = self.reducer(site, block.probs, query_positions, key_offset)
        self._keep(site, out, key_offset + block.probs.shape[-1])

    def assemble(self, site) -> dict[str, torch.Tensor]:
        blocks = self.blocks[site]
        return {k: torch.cat([b[k] for b in blocks], dim=-2) for k in blocks[0]}  # name -> (…, Nq, Nk)


class Decomposer:
    """Reduces a block of attention probabilities of one layer to per-(query, key) numbers (see
    :data:`OUTPUTS`): ``head_norms`` α^h_ij‖f_h(x_j)‖ (B, H, bq, Nk); ``sum_norms`` ‖Σ_h α^h_ij f_h(x_j)‖;
    ``resln_norms`` ‖T_i(x_j)‖; ``globenc`` ‖LN2-decomposed T_i(x_j)‖; ``alti`` the ALTI contributions
    (rows sum to 1); ``logit`` the attention vector's direct logit contribution (Σ_h α f_h)·u / s_i (B, bq, Nk)."""

    def __init__(self, parts: ModelParts, ctx: Context, outputs: Iterable[str],
                 logit_direction: torch.Tensor | None = None):
        self.parts, self.ctx, self.outputs = parts, ctx, set(outputs)
        bad = self.outputs - set(OUTPUTS)
        if bad:
            raise ValueError(f"unknown outputs {bad}")
        self.logit_direction = logit_direction  # (d,) float64: γ_final ⊙ U_w (centred for a LayerNorm)
        self.f: torch.Tensor | None = None

    def set_values(self, site, value: torch.Tensor) -> None:
        """f_h(x_j) = v^h_j W_O^h for every head: (B, H, Nk, d), once per layer call."""
        p = self.parts.layers[site[1]]  # site: (stream, layer)
        B, hkv, nk, dv = value.shape
        d = p.w_o.shape[0]
        H = p.w_o.shape[1] // dv
        v = value.double()[:, torch.arange(H, device=value.device) // (H // hkv)]  # (B, H, Nk, Dv)
        w = p.w_o.detach().double().reshape(d, H, dv)  # (d, H, Dv)
        self.f = torch.einsum("bhkv,dhv->bhkd", v, w)  # (B, H, Nk, d)

    def __call__(self, site, probs: torch.Tensor, qpos: torch.Tensor, key_offset: int) -> dict[str, torch.Tensor]:
        stream, layer = site
        if stream != "self":
            raise CaptureError(f"value decomposition records the self stream only, got {stream}")
        f = self.f  # (B, H, Nk, d)
        B, H, bq, nk = probs.shape
        d = f.shape[-1]
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.outputs}
        if "head_norms" in self.outputs:
            out["head_norms"] = [probs.double() * f.norm(dim=-1)[:, :, None, :]]  # (B, H, bq, Nk)
        vec = self.outputs - {"head_norms"}
        step = max(1, SUB_BLOCK_ELEMENTS // max(1, B * nk * d))
        for s in range(0, bq, step) if vec else ():
            rows = slice(s, min(s + step, bq))
            for k, v in self._vectors(layer, probs[:, :, rows].double(), qpos[rows], key_offset).items():
                out[k].append(v)
        return {k: torch.cat(v, dim=-2).float() for k, v in out.items()}

    def _vectors(self, layer: int, probs: torch.Tensor, qpos: torch.Tensor, key_offset: int) -> dict[str, torch.Tensor]:
        p, ctx = self.parts.layers[layer], self.ctx
        q = qpos.long().to(probs.device)  # absolute query positions
        mixed = torch.einsum("bhqk,bhkd->bqkd", probs, self.f)  # (B, bq, Nk, d): Σ_h α^h_ij f_h(x_j)
        res: dict[str, torch.Tensor] = {}
        if "sum_norms" in self.outputs:
            res["sum_norms"] = mixed.norm(dim=-1)
        if "logit" in self.outputs:
            s, _ = _norm_scale(self.parts.final_norm, ctx.final_in)  # (B, N)
            res["logit"] = (mixed @ self.logit_direction) * s[:, q][:, :, None]  # (B, bq, Nk)
        if not self.outputs & {"resln_norms", "globenc", "alti"}:
            return res
        x = ctx.x[layer].double()  # (B, N, d)
        z = mixed.clone()
        cols = q - key_offset  # the key column of each query's own token (self-attention)
        rows = torch.arange(len(q), device=z.device)
        z[:, rows, cols] += x[:, q]  # + δ_ij x_i
        bias = (p.b_o.detach().double() if p.b_o is not None
                else torch.zeros(z.shape[-1], dtype=torch.float64, device=z.device))
        if self.parts.style == "post_ln":
            s1, _ = _norm_scale(p.ln1, ctx.ln1_in[layer])  # (B, N)
            g1 = p.ln1.weight.detach().double()
            s1 = s1[:, q][:, :, None, None]  # (B, bq, 1, 1)
            t = g1 * (z - z.mean(-1, keepdim=True)) * s1  # (B, bq, Nk, d): T_i(x_j)
            y = t.sum(2) + (g1 * (bias - bias.mean()) * s1[:, :, 0] + p.ln1.bias.detach().double())  # (B, bq, d)
        else:
            t = z
            y = t.sum(2) + bias  # (B, bq, d): x_i + attn_i
        if "resln_norms" in self.outputs:
            res["resln_norms"] = t.norm(dim=-1)
        if "globenc" in self.outputs:
            if self.parts.style != "post_ln":
                raise InputError("globenc is defined for post-layer-norm encoders (BERT family)")
            s2, _ = _norm_scale(p.ln2, ctx.ln2_in[layer])
            g2 = p.ln2.weight.detach().double()
            t2 = g2 * (t - t.mean(-1, keepdim=True)) * s2[:, q][:, :, None, None]
            res["globenc"] = t2.norm(dim=-1)
        if "alti" in self.outputs:
            dist = (y[:, :, None, :] - t).abs().sum(-1)  # (B, bq, Nk): ‖y_i − T_i(x_j)‖₁
            c = (y.abs().sum(-1, keepdim=True) - dist).clamp_min(0.0)  # max(0, ‖y_i‖₁ − d_ij)
            res["alti"] = c / c.sum(-1, keepdim=True).clamp_min(1e-30)
        return res


def decompose(lm: LoadedModel, text: str, outputs: Iterable[str], *, method: str, layers: Iterable[int] | None = None,
              logit_target: int | None = None, position: int | None = None) -> dict[str, Any]:
    """Run the two forwards and return {"outputs": {name: (L, [H,] N, N) float64 numpy}, "layers", "tokens",
    "special", "causal", "logits" ((V,) numpy for the ``logit`` output, else None)} for the ``layers`` asked
    (default all)."""
    parts = model_parts(lm, method)
    inputs, tokens = encode(lm, text)
    n_layers = len(parts.layers)
    if layers is None:
        wanted = sorted(parts.layers)
    else:
        wanted = sorted({int(la) % n_layers for la in layers if -n_layers <= int(la) < n_layers})
        bad = [la for la in layers if not -n_layers <= int(la) < n_layers]
        if bad:
            raise InputError(f"layer {bad[0]} is out of range: {lm.name} has layers 0..{n_layers - 1}")
    ctx = record_context(lm, inputs, parts)
    direction, logits = None, None
    if "logit" in outputs:
        logits = output_logits(lm, ctx.output, position)[0].detach().double().cpu().numpy()
        head = lm.model.get_output_embeddings()
        if parts.final_norm is None or head is None or lm.kind != "causal":
            raise InputError(f"{method} needs a causal language model with its LM head; {lm.name} is not one")
        t = int(np.argmax(logits)) if logit_target is None else int(logit_target)
        direction = head.weight[t].detach().double() * parts.final_norm.weight.detach().double()  # γ ⊙ U_w
        if isinstance(parts.final_norm, torch.nn.LayerNorm):
            direction = direction - direction.mean()  # the norm's centring, folded into the direction
    dec = Decomposer(parts, ctx, outputs, direction)
    rec = ValueRecorder(dec)
    prepare(lm)
    session = CaptureSession(recorders=[rec], layers={"self": set(wanted)}, heads={"self": None})
    kwargs = model_inputs(dict(inputs), lm.model)
    if lm.kind == "causal":
        kwargs["use_cache"] = False
    with attention_implementation(lm.model, "attnscope"), session_scope(session), torch.no_grad():
        lm.model(**kwargs)
    res: dict[str, list[np.ndarray]] = {k: [] for k in outputs}
    for la in wanted:
        maps = rec.assemble(("self", la))
        for k in outputs:
            res[k].append(maps[k][0].double().numpy())
    causal = lm.kind == "causal"
    return {"outputs": {k: np.stack(v) for k, v in res.items()}, "layers": wanted, "tokens": tokens.labels(text),
            "special": list(tokens.special), "causal": causal, "logits": logits}


@dataclass
class MixingResult:
    """Token-to-token scores of a value-aware method for one input.

    ``per_layer``: (layer, query, key) for the model layers ``layers``; ``per_head``: (layer, head, query, key)
    where the method has one; ``aggregated``: (query, key) over all layers (rollout-style) where the method
    defines one. ``what_it_is`` / ``what_it_is_not``: one line each, shown with every result.
    """

    method: str
    tokens: list[str]
    special: list[bool]
    layers: list[int]
    per_layer: np.ndarray
    what_it_is: str
    what_it_is_not: str
    causal: bool = False
    per_head: np.ndarray | None = None
    aggregated: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def token_scores(self, row: int) -> np.ndarray:
        """(key,): the aggregated map's row if there is one, else the last layer's row."""
        m = self.aggregated if self.aggregated is not None else self.per_layer[-1]
        return np.asarray(m[row], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        d = {"method": self.method, "tokens": self.tokens, "special": self.special, "layers": self.layers,
             "per_layer": self.per_layer.tolist(), "what_it_is": self.what_it_is,
             "what_it_is_not": self.what_it_is_not, "causal": self.causal, "meta": self.meta}
        if self.per_head is not None:
            d["per_head"] = self.per_head.tolist()
        if self.aggregated is not None:
            d["aggregated"] = self.aggregated.tolist()
        return d


def rollout_of(per_layer: np.ndarray) -> np.ndarray:
    """Multiply row-normalised per-layer matrices, R_l = C_l · R_{l−1} (no added identity: the residual is
    already in the decomposition). per_layer: (L, N, N) -> (L, N, N) (``[-1]`` over the whole stack)."""
    from ..analysis.rollout import rollout_chain

    return rollout_chain(np.asarray(per_layer, dtype=np.float64)[:, None], residual=0.0)

