"""Attention as a graph: thresholded edges and token centralities (networkx)."""

from __future__ import annotations

import numpy as np

from ._common import check_int, check_number, maps, require_square, token_labels
from .registry import register_analysis
from .results import GraphResult, TokenScores


def attention_graph_from_map(a: np.ndarray, threshold: float = 0.1, self_loops: bool = False):
    """networkx DiGraph: node i (token position) -> node j when a[i, j] > threshold (query attends to key)."""
    import networkx as nx

    n = a.shape[0]
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    qi, kj = np.nonzero(a > threshold)
    g.add_weighted_edges_from((int(i), int(j), float(a[i, j])) for i, j in zip(qi, kj) if self_loops or i != j)
    return g


def centralities(g) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    import networkx as nx

    n = g.number_of_nodes()
    notes: dict[str, str] = {}
    out = {
        "in_degree": np.array([g.in_degree(i, weight="weight") for i in range(n)], float),
        "out_degree": np.array([g.out_degree(i, weight="weight") for i in range(n)], float),
        "degree_centrality": _arr(nx.degree_centrality(g), n),
        # shortest paths should prefer strong links: distance = 1 / weight
        "betweenness": _arr(nx.betweenness_centrality(
            g, weight=lambda u, v, d: 1.0 / d["weight"]) if g.number_of_edges() else {}, n),
    }
    try:
        ev = nx.eigenvector_centrality(g, max_iter=1000, tol=1e-8, weight="weight") if g.number_of_edges() else {}
    except (nx.PowerIterationFailedConvergence, nx.NetworkXException, ZeroDivisionError) as e:
        ev, notes["eigenvector"] = {}, f"not defined for this graph ({type(e).__name__}); set to 0"
    out["eigenvector"] = _arr(ev, n)
    out["pagerank"] = _arr(nx.pagerank(g, weight="weight"), n)
    return out, notes


def _arr(d: dict, n: int) -> np.ndarray:
    v = np.array([float(d.get(i, 0.0)) for i in range(n)])
    return np.where(np.isfinite(v), v, 0.0)


@register_analysis("attention_graph", result="GraphResult", square=True, tags=("graph",))
def attention_graph(trace, stream: str | None = None, layer: int = -1, head: int | None = None,
                    threshold: float = 0.1, self_loops: bool = False) -> GraphResult:
    """Thresholded attention graph of one layer (one head, or heads averaged) and centrality of each token.

    Edge i → j (query i attends to key j) when the weight exceeds ``threshold``; per token:
    weighted in/out degree, degree centrality, betweenness (path length 1/weight), eigenvector
    centrality (weight flows to attended tokens; 0 where it is undefined, e.g. a causal DAG —
    noted in ``meta``) and PageRank (Brin & Page 1998). Graph views of attention follow Abnar &
    Zuidema 2020 (attention graph); centrality measures as defined by Freeman 1977 (betweenness)
    and Bonacich 1972 (eigenvector).
    """
    s = require_square(trace, stream, "attention_graph")
    threshold = check_number("threshold", threshold, 0.0, 1.0)
    layer = check_int("layer", layer)
    head = None if head is None else check_int("head", head)
    sub = trace.sel(layer=layer, head=head, stream=s)
    _, w = maps(sub, s)  # (1, H, N, N)
    a = w[0].mean(0)  # (N, N)
    g = attention_graph_from_map(a, threshold, self_loops)
    labels = token_labels(trace, s)
    for i, t in enumerate(labels):
        g.nodes[i]["label"] = t
    scores, notes = centralities(g)
    tok = TokenScores(labels, scores, "centrality", meta={"notes": notes})
    return GraphResult(g, tok, meta={"layer": sub.layers[s][0], "head": head, "threshold": threshold,
                                     "stream": s, "edges": g.number_of_edges(), "notes": notes})
