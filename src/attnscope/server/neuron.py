"""The explorer's neuron view: one head's query·key decomposition for one query token.

For the chosen query position ``i`` the attention score of key ``j`` is ``s_j = scale · Σ_d q_d k_{j,d}``
(Vaswani et al. 2017, eq. 1), and the weight is ``softmax_j(s_j)`` over the keys the query may see
(causal models: ``j <= i``; on a sliding-window layer also ``j > i - window``, as
:meth:`attnscope.AttentionTrace.allowed_mask`). The view shows ``q``, each ``k_j``, the element-wise
products ``q ⊙ k_j`` and their sum, as bertviz's neuron view does (Vig 2019, "A Multiscale Visualization
of Attention in the Transformer Model"), but for any model on the fast path: the forward runs through
attnscope's attention function, which hands this module the (post-rotary) query and key of the selected
layer only; nothing else is recorded.
"""

from __future__ import annotations

from typing import Any

import torch

from ..capture.api import _encode, _forward, attention_implementation, resolve_selection
from ..capture.interface import CaptureSession, Site, annotate_model, register, session_scope
from ..errors import CaptureError, InputError
from ..models import LoadedModel

MAX_NEURON_TOKENS = 1024


def qk_decomposition(lm: LoadedModel, text: str, layer: int, head: int, query: int,
                     text_pair: str | None = None, truncate: bool = False) -> dict[str, Any]:
    """q (d,), k (Nk, d), scores (Nk,) = scale · q·k and weights (Nk,) of one head for one query token.

    ``layer``/``head``: model indices (negative count from the end); ``query``: token position (negative
    counts from the end). Encoders and decoder-only models (the ``self`` stream).
    """
    if lm.kind not in ("encoder", "causal"):
        raise InputError(f"the neuron view takes encoder or decoder-only models; {lm.name} is {lm.kind}")
    layer_sel, head_sel = resolve_selection(lm, [layer], [head], ["self"])
    layer, head = layer_sel["self"][0], head_sel["self"][0]
    inputs, seqs, _ = _encode(lm, text, text_pair, truncate)
    n = int(inputs["input_ids"].shape[1])
    if n > MAX_NEURON_TOKENS:
        raise InputError(f"the text has {n} tokens; the neuron view takes at most {MAX_NEURON_TOKENS}: shorten it")
    if not -n <= query < n:
        raise InputError(f"query {query} is out of range: the text has tokens 0..{n - 1}")
    query = query % n
    got: dict[str, Any] = {}

    def on_qk(site: Site, q: torch.Tensor, k: torch.Tensor, scaling: float) -> None:
        if site.stream == "self" and site.layer == layer:  # q (B, H, Nq, d), k (B, Hkv, Nk, d)
            group = q.shape[1] // k.shape[1]  # grouped-query attention: heads share a key head
            got["q"] = q[0, head, query].float().cpu()  # (d,)
            got["k"] = k[0, head // group].float().cpu()  # (Nk, d)
            got["scale"] = float(scaling)

    register()
    if not getattr(lm.model, "_attnscope_annotated", False):
        annotate_model(lm.model)
        lm.model._attnscope_annotated = True
    session = CaptureSession(on_qk=on_qk)
    with attention_implementation(lm.model, "attnscope"), session_scope(session), torch.no_grad():
        _forward(lm, inputs)
    if "q" not in got:
        raise CaptureError(f"layer {layer} of {lm.name} did not run through attnscope's attention function")
    q, k = got["q"], got["k"]
    scores = got["scale"] * (k @ q)  # (Nk,)
    allowed = torch.ones(k.shape[0], dtype=torch.bool)  # (Nk,)
    window = lm.sliding_windows().get(layer)  # the same windows captures record (trace.allowed_mask)
    if lm.kind == "causal":
        allowed[query + 1:] = False  # a decoder's query sees itself and the tokens before it
        if window:  # a sliding-window layer (Mistral, config.layer_types): only the last `window` of them
            allowed[:max(0, query - window + 1)] = False
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)  # (Nk,)
    tok = seqs["input"]
    return {"model": lm.name, "layer": layer, "head": head, "query": query, "scale": got["scale"],
            "tokens": tok.labels(text if text_pair is None else None),
            "q": q.tolist(), "k": k.tolist(), "scores": scores.tolist(), "weights": weights.tolist(),
            "allowed": allowed.tolist(), "window": window}
