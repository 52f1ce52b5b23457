"""Interventions on attention probabilities, run through attnscope's registered attention function.

Every class here implements the :class:`attnscope.capture.interface.Intervention` protocol:
``applies(site)`` says whether the intervention touches a ``Site(stream, layer)``; where it does, the
attention function computes that layer's output from ``apply(site, probs, query_positions)`` with
``probs`` (B, H, bq, Nk) for all heads, instead of calling SDPA. Because the intervention lives in the
attention function, it works under SDPA for every model on transformers' AttentionInterface
(a peer's ``head_mask`` no longer does in transformers 5).

A no-op (scale 1.0, an empty knockout, no heads selected) returns False from ``applies`` so the layer
runs on SDPA and the model's output is bitwise unchanged.

Conventions: heads are given as ``(layer, head)`` pairs, or ``{layer: [heads]}`` (``None`` = every head
of that layer); positions are absolute token positions; ``stream=None`` matches every stream.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..capture.api import _encode, attention_implementation, check_text, supports_interface
from ..capture.interface import CaptureSession, Site, annotate_model, register, session_scope
from ..devices import model_inputs
from ..errors import CaptureError, InputError
from ..models import LoadedModel

HeadSpec = Iterable[tuple[int, int]] | Mapping[int, Iterable[int] | None]


def _targets(heads: HeadSpec | None) -> dict[int, frozenset[int] | None]:
    """Normalise a head selection to {layer: frozenset(heads) or None (= all heads)}."""
    if heads is None:
        return {}
    out: dict[int, set[int] | None] = {}
    if isinstance(heads, Mapping):
        for layer, hs in heads.items():
            out[int(layer)] = None if hs is None else {int(h) for h in hs}
    else:
        for item in heads:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise InputError(f"heads must be (layer, head) pairs or {{layer: [heads]}}; got {item!r}")
            layer, head = int(item[0]), int(item[1])
            if out.get(layer, set()) is not None:
                out.setdefault(layer, set()).add(head)  # type: ignore[union-attr]
    return {k: (None if v is None else frozenset(v)) for k, v in out.items()}


def _head_index(sel: frozenset[int] | None, n_heads: int, device) -> torch.Tensor:
    if sel is None:
        return torch.arange(n_heads, device=device)
    bad = [h for h in sel if not 0 <= h < n_heads]
    if bad:
        raise InputError(f"head {bad[0]} is out of range: this layer has heads 0..{n_heads - 1}")
    return torch.tensor(sorted(sel), dtype=torch.long, device=device)


def _renormalise(p: torch.Tensor) -> torch.Tensor:
    s = p.sum(-1, keepdim=True)
    return torch.where(s > 0, p / s.clamp_min(torch.finfo(p.dtype).tiny), torch.zeros_like(p))


@dataclass
class _HeadIntervention:
    """Base: touches the selected heads of the selected layers of one stream (or all streams)."""

    heads: Any = None
    stream: str | None = None

    def __post_init__(self) -> None:
        self._targets = _targets(self.heads)

    def _sel(self, site: Site) -> frozenset[int] | None | bool:
        """The head set at this site, None for all heads, False if the site is not touched."""
        if self.stream is not None and site.stream != self.stream:
            return False
        if site.layer not in self._targets:
            return False
        return self._targets[site.layer]

    def applies(self, site: Site) -> bool:
        sel = self._sel(site)
        return sel is not False and (sel is None or len(sel) > 0)


@dataclass
class ScaleHeads(_HeadIntervention):
    """Multiply the selected heads' probabilities by ``factor`` (no renormalisation): the head's output
    is scaled by ``factor``. ``factor=0`` removes the head (head masking, Michel et al. 2019, "Are Sixteen
    Heads Really Better than One?", NeurIPS); ``factor=1`` is a no-op and never leaves SDPA."""

    factor: float = 0.0

    def applies(self, site: Site) -> bool:
        return float(self.factor) != 1.0 and super().applies(site)

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        idx = _head_index(self._sel(site), probs.shape[1], probs.device)  # type: ignore[arg-type]
        scale = torch.ones(probs.shape[1], dtype=probs.dtype, device=probs.device)
        scale[idx] = float(self.factor)
        return probs * scale[None, :, None, None]  # (B, H, bq, Nk)


def ZeroHeads(heads: HeadSpec, stream: str | None = None) -> ScaleHeads:
    """Remove heads: their probabilities (and so their output) become zero (Michel et al. 2019)."""
    return ScaleHeads(heads=heads, stream=stream, factor=0.0)


@dataclass
class MeanHeads(_HeadIntervention):
    """Replace the selected heads' pattern by a "mean" one: by default the *uniform* distribution over
    the keys the query is allowed to attend to (keys with non-zero probability: causal and padding masks
    give exactly 0), so the head's output becomes the mean of the allowed values. ``patterns`` can give
    instead a fixed (query, key) map per ``(layer, head)`` — e.g. the head's mean pattern over a dataset
    of inputs of this length (rows are renormalised over the allowed keys)."""

    patterns: Mapping[tuple[int, int], torch.Tensor] | None = None

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        idx = _head_index(self._sel(site), probs.shape[1], probs.device)  # type: ignore[arg-type]
        out = probs.clone()
        allowed = (probs[:, idx] > 0).to(probs.dtype)  # (B, h, bq, Nk)
        new = allowed
        if self.patterns is not None:
            rows = []
            for h in idx.tolist():
                pat = self.patterns.get((site.layer, h))
                if pat is None:
                    rows.append(torch.ones_like(allowed[:, 0]))
                    continue
                pat = torch.as_tensor(pat, dtype=probs.dtype, device=probs.device)
                if pat.shape[-1] != probs.shape[-1] or int(query_positions.max()) >= pat.shape[0]:
                    raise InputError(f"mean pattern for layer {site.layer} head {h} is {tuple(pat.shape)} but the "
                                     f"input has {probs.shape[-1]} keys; give patterns of the input's length")
                rows.append(pat[query_positions.long()][None].expand_as(allowed[:, 0]))  # (B, bq, Nk)
            new = allowed * torch.stack(rows, 1)  # (B, h, bq, Nk)
        out[:, idx] = _renormalise(new)
        return out


@dataclass
class KeepHeads:
    """Keep only the given heads; every other head of the stream (all layers) is zeroed."""

    heads: Any = None
    stream: str | None = None

    def __post_init__(self) -> None:
        self._targets = _targets(self.heads)

    def applies(self, site: Site) -> bool:
        return self.stream is None or site.stream == self.stream

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros(probs.shape[1], dtype=probs.dtype, device=probs.device)
        if site.layer in self._targets:
            keep[_head_index(self._targets[site.layer], probs.shape[1], probs.device)] = 1.0
        return probs * keep[None, :, None, None]  # (B, H, bq, Nk)


@dataclass
class Knockout:
    """Block query→key edges and renormalise each row over the keys left (attention knockout, as in
    Geva et al. 2023, "Dissecting Recall of Factual Associations in Auto-Regressive Language Models").

    ``keys``: key positions blocked for every query; ``edges``: explicit (query, key) pairs;
    ``queries``: restrict ``keys`` to these query rows. ``layers``/``heads`` restrict where (None = all).
    A row whose every allowed key is blocked becomes all zeros (the head contributes nothing there).
    An empty knockout never leaves SDPA.
    """

    keys: Sequence[int] = ()
    edges: Sequence[tuple[int, int]] = ()
    queries: Sequence[int] | None = None
    layers: Sequence[int] | None = None
    heads: Sequence[int] | None = None
    stream: str | None = None

    def applies(self, site: Site) -> bool:
        if not self.keys and not self.edges:
            return False
        if self.heads is not None and len(self.heads) == 0:
            return False
        if self.stream is not None and site.stream != self.stream:
            return False
        return self.layers is None or site.layer in self.layers

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        nk = probs.shape[-1]
        block = torch.zeros(len(query_positions), nk, dtype=torch.bool, device=probs.device)  # (bq, Nk)
        qpos = query_positions.long()
        if self.keys:
            keys = torch.tensor([k % nk for k in self.keys], dtype=torch.long, device=probs.device)
            rows = torch.ones(len(qpos), dtype=torch.bool, device=probs.device) if self.queries is None else \
                torch.isin(qpos, torch.tensor(list(self.queries), dtype=torch.long, device=probs.device))
            block[rows[:, None] & torch.isin(torch.arange(nk, device=probs.device), keys)[None, :]] = True
        for q, k in self.edges:
            hit = (qpos == int(q)).nonzero().flatten()
            if len(hit) and 0 <= int(k) < nk:
                block[hit, int(k)] = True
        if self.heads is None:
            new = probs.masked_fill(block[None, None], 0.0)
            return _renormalise(new)
        idx = _head_index(frozenset(self.heads), probs.shape[1], probs.device)
        out = probs.clone()
        out[:, idx] = _renormalise(probs[:, idx].masked_fill(block[None, None], 0.0))
        return out


@dataclass
class RemoveTopKey(_HeadIntervention):
    """The weight-manipulation experiment (Serrano & Smith 2019, "Is Attention Interpretable?", ACL):
    in every query row of the selected heads, zero the ``k`` most-attended keys and renormalise.
    Rows with at most ``k`` allowed keys (e.g. the first row under a causal mask) are left unchanged,
    since nothing would remain to renormalise over. ``heads=None`` means every head of every layer."""

    k: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise InputError(f"k must be at least 1, got {self.k}")

    def applies(self, site: Site) -> bool:
        if self.heads is None:
            return self.stream is None or site.stream == self.stream
        return super().applies(site)

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        sel = None if self.heads is None else self._sel(site)
        idx = _head_index(sel, probs.shape[1], probs.device)  # type: ignore[arg-type]
        p = probs[:, idx]  # (B, h, bq, Nk)
        k = min(self.k, p.shape[-1])
        top = p.topk(k, dim=-1).indices  # (B, h, bq, k)
        removed = p.scatter(-1, top, 0.0)
        enough = ((p > 0).sum(-1, keepdim=True) > k)  # (B, h, bq, 1)
        out = probs.clone()
        out[:, idx] = torch.where(enough, _renormalise(removed), p)
        return out


# ---------------------------------------------------------------------------- probes (record, gate)
@dataclass
class ProbsProbe:
    """Records the probabilities a layer actually used (after the interventions listed before it).

    With ``keep_graph=True`` the recorded tensors stay in the autograd graph (``retain_grad`` is called),
    so gradients of the output w.r.t. the attention probabilities can be taken — the output genuinely
    depends on these tensors because the layer's output is computed from them. ``layers``/``stream``
    restrict where it records (None = everywhere). Blocks of query rows are joined by :meth:`maps`.
    """

    layers: Sequence[int] | None = None
    stream: str | None = None
    keep_graph: bool = False
    blocks: dict[Site, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))

    def applies(self, site: Site) -> bool:
        return (self.stream is None or site.stream == self.stream) and (self.layers is None or site.layer in self.layers)

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        if self.keep_graph and probs.requires_grad:
            probs.retain_grad()
            self.blocks[site].append(probs)
        else:
            self.blocks[site].append(probs.detach())
        return probs

    def sites(self, stream: str | None = None) -> list[Site]:
        return sorted((s for s in self.blocks if stream is None or s.stream == stream), key=lambda s: s.layer)

    def maps(self, stream: str = "self") -> torch.Tensor:
        """(layer, B, H, Nq, Nk) detached, layers in model order."""
        return torch.stack([torch.cat([b.detach() for b in self.blocks[s]], dim=2) for s in self.sites(stream)])

    def tensors(self, stream: str = "self") -> list[torch.Tensor]:
        return [b for s in self.sites(stream) for b in self.blocks[s]]


class HeadGate:
    """Per-head scale ξ (layer, head), all 1.0, as a leaf tensor requiring grad: ``probs * ξ[layer, head]``.

    Multiplying by 1.0 leaves the values bitwise unchanged; ``∂loss/∂ξ`` is the gradient-based head
    importance of Michel et al. 2019 (their head-mask gradient), which transformers' ``head_mask`` no
    longer provides under SDPA.
    """

    def __init__(self, n_layers: int, n_heads: int, stream: str = "self"):
        self.gate = torch.ones(n_layers, n_heads, requires_grad=True)
        self.stream = stream

    def applies(self, site: Site) -> bool:
        return site.stream == self.stream and site.layer < self.gate.shape[0]

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        g = self.gate[site.layer].to(probs.device, probs.dtype)
        return probs * g[None, :, None, None]  # (B, H, bq, Nk)


# ---------------------------------------------------------------------------- running a model
def prepare(lm: LoadedModel) -> None:
    """Register the attnscope attention and annotate the model's sites (idempotent)."""
    if not supports_interface(lm.model):
        raise CaptureError(f"{type(lm.model).__name__} does not route attention through transformers' "
                           "AttentionInterface; interventions need it")
    register()
    if not getattr(lm.model, "_attnscope_annotated", False):
        annotate_model(lm.model)
        lm.model._attnscope_annotated = True


def run_with_interventions(lm: LoadedModel, inputs: Mapping[str, torch.Tensor], interventions: Sequence[Any] = (),
                           *, grad: bool = False, on_call=None, **forward_kwargs) -> Any:
    """Run ``lm.model(**inputs)`` with the attnscope attention and these interventions active.

    ``grad=True`` runs under ``torch.enable_grad()`` (for gradients of attention probabilities or of a
    :class:`HeadGate`); otherwise under ``no_grad``. The model's attention implementation is restored
    afterwards, even on error. Returns the model output.
    """
    prepare(lm)
    session = CaptureSession(interventions=list(interventions), on_call=on_call)
    kwargs = model_inputs(dict(inputs), lm.model)  # inputs follow the model's device
    kwargs.update(forward_kwargs)
    if lm.kind == "causal":
        kwargs.setdefault("use_cache", False)
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with attention_implementation(lm.model, "attnscope"), session_scope(session), ctx:
        out = lm.model(**kwargs)
    if session.calls == 0:
        raise CaptureError(f"{lm.name}: the attention function was never called; interventions cannot apply")
    return out


def encode(lm: LoadedModel, text: str, truncate: bool = False):
    """(model inputs (1, N) on the model's device, Tokens) of one text, tokenised as :func:`attnscope.capture` does."""
    inputs, seqs, _ = _encode(lm, check_text(text), None, truncate)
    return model_inputs(inputs, lm.model), seqs["input"]


def output_logits(lm: LoadedModel, output: Any, position: int | None = None) -> torch.Tensor:
    """The logits a prediction is read from: (B, C) for a classifier, (B, V) at ``position`` for an LM
    (default: the last position — the next-token prediction)."""
    logits = getattr(output, "logits", None)
    if logits is None:
        if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
            logits = output[0]
        else:
            raise InputError(f"{lm.name} has no prediction head (its output has no logits); load it with one, "
                             "e.g. load_model(name, model_class=transformers.AutoModelForSequenceClassification)")
    if logits.dim() == 3:
        pos = logits.shape[1] - 1 if position is None else position
        if not -logits.shape[1] <= pos < logits.shape[1]:
            raise InputError(f"position {pos} is out of range: the input has {logits.shape[1]} tokens")
        return logits[:, pos]  # (B, V)
    return logits  # (B, C)


def prediction_change(base_logits: torch.Tensor, new_logits: torch.Tensor, target: int | None = None) -> dict[str, Any]:
    """How much a prediction moved: KL(p_base ‖ p_new) in nats, the target's probability shift
    (new − base) and logit difference (new − base), and whether the argmax changed. Logits (C,) or (1, C);
    ``target`` defaults to the base prediction."""
    b = base_logits.detach().double().reshape(-1)
    n = new_logits.detach().double().reshape(-1)
    lb, ln = torch.log_softmax(b, -1), torch.log_softmax(n, -1)
    t = int(b.argmax()) if target is None else int(target)
    return {
        "kl": float((lb.exp() * (lb - ln)).sum()),
        "prob_shift": float(ln[t].exp() - lb[t].exp()),
        "logit_diff": float(n[t] - b[t]),
        "target": t,
        "base_prob": float(lb[t].exp()),
        "new_prob": float(ln[t].exp()),
        "flipped": bool(int(n.argmax()) != int(b.argmax())),
    }


def intervene(lm: LoadedModel, text: str, interventions: Sequence[Any], *, target: int | None = None,
              position: int | None = None) -> dict[str, Any]:
    """Run ``text`` with and without the interventions; the prediction change (:func:`prediction_change`)."""
    inputs, tokens = encode(lm, text)
    base = output_logits(lm, run_with_interventions(lm, inputs, ()), position)[0]
    new = output_logits(lm, run_with_interventions(lm, inputs, interventions), position)[0]
    out = prediction_change(base, new, target)
    out["tokens"] = tokens.labels()
    return out
