"""Figures of the positional analyses (one per kind). Each takes a result, writes a PNG/SVG/PDF by the path's
suffix and returns the path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..render.style import DIVERGING_CMAP, styled, subplots


def _save(fig, path, dpi: int = 90) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _sym(m: np.ndarray) -> float:
    v = float(np.abs(m).max()) if m.size else 1.0
    return v if v > 0 else 1.0


@styled
def plot_sinusoidal(res, path) -> Path:
    """Sinusoidal positions: the matrix, the dot-product similarity, and that similarity against the offset
    (rows from different start positions overlap: it depends on the offset only)."""
    pe, sim = res.encoding, res.similarity
    n, d = pe.shape
    fig, axes = subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1.3]})
    ax = axes[0]
    im = ax.imshow(pe, aspect="auto", cmap=DIVERGING_CMAP, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("dimension (even: sin, odd: cos; frequency falls to the right)")
    ax.set_ylabel("position")
    ax.set_title(f"PE matrix ({n} positions × d={d})")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax = axes[1]
    im = ax.imshow(sim, cmap="viridis", interpolation="nearest")
    ax.set_xlabel("position n")
    ax.set_ylabel("position m")
    ax.set_title("PE[m]·PE[n] (constant along diagonals)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[2]
    starts = sorted({0, n // 4, n // 2})
    for m in starts:
        off = np.arange(n) - m
        ax.plot(off, sim[m], lw=1.4 if m == 0 else 1.0, ls="-" if m == 0 else "--", label=f"from position m={m}")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("offset n − m")
    ax.set_ylabel("PE[m]·PE[n]")
    ax.set_title(f"similarity vs offset: symmetric, peak d/2={d // 2} at 0")
    ax.legend(fontsize=7)
    fig.suptitle(f"Sinusoidal position encoding (Vaswani et al. 2017), base {res.base:g}", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_learned(pos, dec, path, head: int | None = None, max_offset: int = 64) -> Path:
    """Learned absolute positions: cosine similarity of the position vectors, its mean by offset, and the
    layer-0 score split into content/position terms: per-head shares (row-centred) and one head's four terms."""
    from .encodings import TERMS

    shares = dec.shares(centered=True)
    pshare = dec.position_share(centered=True)
    head = int(np.argmax(pshare)) if head is None else int(head)
    fig, axes = subplots(2, 5, figsize=(18, 7.2))
    ax = axes[0][0]
    im = ax.imshow(pos.similarity, cmap=DIVERGING_CMAP, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(f"cosine of position vectors ({len(pos.similarity)})")
    ax.set_xlabel("position n")
    ax.set_ylabel("position m")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[0][1]
    k = min(32, len(pos.similarity))
    im = ax.imshow(pos.similarity[:k, :k], cmap=DIVERGING_CMAP, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(f"the first {k} positions")
    ax.set_xlabel("position n")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[0][2]
    ks, mean, std = pos.offset_profile(max_offset)
    ax.plot(ks, mean, color="#3b75af")
    ax.fill_between(ks, mean - std, mean + std, color="#3b75af", alpha=0.2, lw=0)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("offset |m − n|")
    ax.set_ylabel("cosine (mean ± std over m)")
    ax.set_title("similarity falls with distance")
    ax = axes[0][3]
    heads = np.arange(len(pshare))
    bottom = np.zeros(len(heads))
    colors = {"content-content": "#7f7f7f", "content-position": "#e3a33b", "position-content": "#c8553d",
              "position-position": "#3b75af"}
    for t in TERMS:
        ax.bar(heads, shares[t], bottom=bottom, color=colors[t], label=t)
        bottom += shares[t]
    ax.set_xticks(heads)
    ax.set_xlabel("layer-0 head")
    ax.set_ylabel("share of mean |term| (row-centred)")
    ax.set_title("what shapes each layer-0 head")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, loc="lower right")
    ax = axes[0][4]
    ax.axis("off")
    lines = [f"text: {dec.meta.get('text', '')[:60]!r}", f"model: {dec.model}, layer 0",
             f"terms sum to the model's score: max |residual| {dec.max_residual:.1e}",
             "position share (row-centred) per head:", "  " + " ".join(f"{v:.2f}" for v in pshare[:6]),
             "  " + " ".join(f"{v:.2f}" for v in pshare[6:12]),
             f"below: head {head} (the most position-driven)"]
    ax.text(0, 0.95, "\n".join(lines), va="top", fontsize=8, family="monospace")
    toks = dec.tokens
    show = [*TERMS, "score"]
    mats = [dec.terms[t][head] for t in TERMS] + [dec.score[head]]
    lim = max(_sym(m - m.mean(-1, keepdims=True)) for m in mats)
    for ax, name, m in zip(axes[1], show, mats):
        mc = m - m.mean(-1, keepdims=True)  # (N, N) row-centred: what softmax sees
        ax.imshow(mc, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"head {head}: {name}" + (" (model's q·k/√d)" if name == "score" else ""), fontsize=9)
        if len(toks) <= 40:
            ax.set_xticks(range(len(toks)))
            ax.set_xticklabels(toks, rotation=90, fontsize=6)
            ax.set_yticks(range(len(toks)))
            ax.set_yticklabels(toks if ax is axes[1][0] else [], fontsize=6)
    axes[1][0].set_ylabel("query")
    fig.suptitle(f"Learned absolute positions of {pos.model} and the content/position split of layer-0 scores "
                 "(each row minus its mean, the part softmax sees; shared colour scale)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi=80)


@styled
def plot_rotary(prof, path) -> Path:
    """Rotary: per-dimension frequencies (and wavelengths), one head's q·k as rotation alone varies the
    distance (q, k held fixed), and how much each frequency carries for those pairs."""
    fr = prof.frequencies
    fig, axes = subplots(1, 3, figsize=(16, 4.3), gridspec_kw={"width_ratios": [1, 1.5, 1]})
    ax = axes[0]
    i = np.arange(len(fr.inv_freq))
    ax.semilogy(i, fr.wavelengths, color="#3b75af", label="wavelength 2π/θ_i (tokens)")
    ax.semilogy(i, fr.inv_freq, color="#c8553d", label="θ_i (radians / token)")
    if fr.max_position:
        ax.axhline(fr.max_position, color="grey", ls="--", lw=0.8, label=f"context {fr.max_position}")
    ax.set_xlabel("dimension pair i (dims i and i + d/2)")
    ax.set_title(f"{prof.model}: rotary frequencies (d_head={fr.head_dim})")
    ax.legend(fontsize=7)
    ax = axes[1]
    dist = prof.distances
    for (q, k), s in zip(prof.pairs, prof.score):
        ax.plot(dist, s, lw=1.0, label=f"q={prof.tokens[q]!r}[{q}] · k={prof.tokens[k]!r}[{k}]")
    ax.plot(dist, prof.mean_score, color="black", lw=1.6, ls="--", label="mean over all causal pairs of the text")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("distance Δ = query position − key position (q, k fixed)")
    ax.set_ylabel("q·k/√d after rotation")
    ax.set_title(f"layer {prof.layer} head {prof.head} (kv head {prof.kv_head}): rotation alone")
    ax.legend(fontsize=6)
    ax = axes[2]
    for (q, k), a in zip(prof.pairs, prof.amplitude):
        ax.plot(i, a, lw=1.0, marker=".", ms=3)
    ax.set_xlabel("dimension pair i (fast → slow rotation)")
    ax.set_ylabel("|q_i|·|k_i| (weight of frequency θ_i)")
    ax.set_title("which frequencies carry the score")
    fig.suptitle("Rotary position embedding (Su et al. 2021): score(Δ) = Σ_i |q_i||k_i| cos(Δθ_i + φ_i)",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
