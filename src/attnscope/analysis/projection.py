"""Head projections: t-SNE / UMAP of heads described by their attention patterns."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._optional import require
from ..errors import InputError, UnknownNameError
from ._common import check_int, check_number, check_trace, maps, query_offset, relative_distance
from .registry import register_analysis
from .results import Projection

METHODS = ("tsne", "umap", "pca")
FEATURES = ("profile", "pattern")
MAX_OFFSET = 8  # relative offsets -8..+8 get their own feature; farther ones are pooled


def head_features(trace, stream: str | None = None, features: str = "profile") -> tuple[str, np.ndarray]:
    """(stream, (layer*head, F) features).

    ``profile`` (length-independent, so many traces of different lengths mix): mean weight at each
    relative offset −8..+8, pooled weight farther before/after, weight on the first token and on
    special tokens, normalised entropy, max weight. ``pattern``: the flattened map (one trace or
    traces of one length).
    """
    if features not in FEATURES:
        raise UnknownNameError("feature set", features, FEATURES)
    s, w = maps(trace, stream)  # (L, H, Nq, Nk)
    nl, nh, nq, nk = w.shape
    if features == "pattern":
        return s, w.reshape(nl * nh, nq * nk)  # (L*H, Nq*Nk)
    rel = relative_distance(nq, nk, query_offset(trace, s)) if s != "cross" else \
        np.arange(nk)[None, :] - np.round(np.arange(nq)[:, None] * (nk / max(nq, 1)))
    cols = []
    for d in range(-MAX_OFFSET, MAX_OFFSET + 1):
        cols.append((w * (rel == d)).sum(-1).mean(-1))  # (L, H)
    cols.append((w * (rel < -MAX_OFFSET)).sum(-1).mean(-1))
    cols.append((w * (rel > MAX_OFFSET)).sum(-1).mean(-1))
    cols.append(w[..., 0].mean(-1))
    special = np.array(trace.key_tokens(s).special, bool)
    cols.append(w[..., special].sum(-1).mean(-1) if special.any() else np.zeros((nl, nh)))
    n_ok = np.maximum((w > 0).sum(-1), 2)  # (L, H, Nq)
    ent = -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1)
    cols.append((ent / np.log(n_ok)).mean(-1))
    cols.append(w.max(-1).mean(-1))
    return s, np.stack(cols, -1).reshape(nl * nh, -1)  # (L*H, F)


@register_analysis("head_projection", result="Projection", tags=("projection",))
def head_projection(trace, stream: str | None = None, method: str = "tsne", features: str = "profile",
                    others: Sequence = (), perplexity: float = 30.0, n_neighbors: int = 15,
                    seed: int = 0) -> Projection:
    """2-D map of heads from features of their attention patterns, over one trace or many (``others``).

    ``method``: ``tsne`` (van der Maaten & Hinton 2008, scikit-learn), ``umap`` (McInnes et al.
    2018, umap-learn) or ``pca``. Each point is one head of one trace, labelled L{layer}H{head}.
    Clustering heads by their patterns follows Clark et al. 2019 §6 (heads embedded by the
    Jensen–Shannon distance of their maps) and AttentionViz (Yeh et al. 2023). ``perplexity`` and
    ``n_neighbors`` are clamped to what the number of heads allows. Deterministic for a ``seed``.
    """
    if method not in METHODS:
        raise UnknownNameError("projection method", method, METHODS)
    perplexity = check_number("perplexity", perplexity, 1.0, 1e4)
    n_neighbors = check_int("n_neighbors", n_neighbors, 2, 10_000)
    seed = check_int("seed", seed, 0, 2**32 - 1)
    others = [check_trace(f"others[{i}]", t) for i, t in enumerate(others)] if isinstance(others, (list, tuple)) \
        else [check_trace("others", others)]
    feats, ls, hs, ts = [], [], [], []
    s0 = trace.resolve_stream(stream)
    for t_i, t in enumerate([trace, *others]):
        s, f = head_features(t, s0 if s0 in t.streams else stream, features)
        if feats and f.shape[1] != feats[0].shape[1]:
            raise InputError("feature sizes differ between traces (features='pattern' needs equal lengths); "
                             "use features='profile'")
        feats.append(f)
        ls += [l for l in t.layers[s] for _ in t.heads[s]]
        hs += [h for _ in t.layers[s] for h in t.heads[s]]
        ts += [t_i] * f.shape[0]
    x = np.concatenate(feats)  # (points, F)
    n = x.shape[0]
    if n < 3:
        raise InputError(f"a projection needs at least 3 heads; got {n}")
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    if method == "pca":
        u, sv, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
        coords = u[:, :2] * sv[:2]
        used = {}
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perp = float(min(perplexity, max(1.0, (n - 1) / 3)))
        coords = TSNE(n_components=2, perplexity=perp, random_state=seed, init="pca").fit_transform(x)
        used = {"perplexity": perp}
    else:
        umap = require("umap", "umap", "head_projection(method='umap')", "or use method='tsne' or 'pca'")

        nn = int(min(n_neighbors, n - 1))
        coords = umap.UMAP(n_neighbors=max(2, nn), min_dist=0.3, random_state=seed,
                           init="spectral" if n > 10 else "random").fit_transform(x)
        used = {"n_neighbors": max(2, nn)}
    return Projection(np.asarray(coords, float), np.array(ls), np.array(hs), np.array(ts), method,
                      meta={"features": features, "stream": s0, **used})
