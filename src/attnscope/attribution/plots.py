"""Figures for the attribution results (matplotlib, Agg backend; PNG/SVG/PDF by the path's suffix).

Every function takes a result object and a path, writes the figure and returns the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from ..render.style import styled, subplots


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _norm(v: np.ndarray) -> np.ndarray:
    m = np.max(np.abs(v)) if len(v) else 0.0
    return v / m if m > 0 else v


@styled
def plot_explanation(expl, path, reference: str | None = None) -> Path:
    """Side by side: per method a bar per token (scaled to max |score| = 1 over the non-special tokens;
    special tokens are left out of the bars and scatters) and a
    scatter of that method against the reference (default ``attention``) with Spearman ρ / Kendall τ."""
    methods = list(expl.scores)
    ref = reference or ("attention" if "attention" in methods else methods[0])
    keep = ~np.asarray(expl.special, bool)
    n = len(methods)
    fig, axes = subplots(n, 2, figsize=(max(8.0, 0.45 * len(expl.tokens) + 4), 1.7 * n + 0.8),
                             gridspec_kw={"width_ratios": [3.2, 1]}, squeeze=False)
    x = np.arange(len(expl.tokens))
    rows = {(r["a"], r["b"]): r for r in expl.agreement} | {(r["b"], r["a"]): r for r in expl.agreement}
    for i, m in enumerate(methods):
        v = np.where(keep, np.asarray(expl.scores[m], float), 0.0)  # special tokens not drawn
        v = _norm(v)
        colors = np.where(~keep, "#bbbbbb", np.where(v >= 0, "#3b75af", "#c8553d"))
        ax = axes[i, 0]
        ax.bar(x, v, color=colors)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel(m, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(expl.tokens if i == n - 1 else [], rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(x) - 0.4)
        sax = axes[i, 1]
        other = ref if m != ref else next((o for o in methods if o != ref), ref)
        a = np.abs(expl.scores[other]) if expl.meta.get("absolute", True) else expl.scores[other]
        b = np.abs(expl.scores[m]) if expl.meta.get("absolute", True) else expl.scores[m]
        sax.scatter(np.asarray(a)[keep], np.asarray(b)[keep], s=14, color="#3b75af")
        r = rows.get((other, m))
        title = f"vs {other}" + (f": ρ={r['spearman']:.2f} τ={r['kendall']:.2f}" if r else "")
        if m in expl.meta.get("left_out_of_agreement", []):
            title += " — not compared: failed its check"
        sax.set_title(title, fontsize=8)
        sax.set_xlabel(other, fontsize=7)
        sax.tick_params(labelsize=7)
    flags = [w.split(":")[0] for w in getattr(expl, "warnings", [])]  # "RANDOM HEAD", "INTEGRATED GRADIENTS DID…"
    fig.suptitle(f"{expl.meta.get('model', '')}: target {expl.target_label!r} (p={expl.probability:.2f})"
                 + (" — |scores| compared" if expl.meta.get("absolute", True) else "")
                 + ("".join(f"\nWARNING: {f} (see the result's warnings)" for f in flags)), fontsize=10,
                 color="#b00020" if flags else "black")
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_head_heatmap(values: np.ndarray, path, *, title: str = "head importance", layers: Sequence[int] | None = None,
                      heads: Sequence[int] | None = None, cmap: str = "viridis", label: str = "") -> Path:
    """A layer × head heatmap (rows = layers, columns = heads) with values written in small grids."""
    values = np.asarray(values, float)
    nl, nh = values.shape
    fig, ax = subplots(figsize=(max(4.0, 0.5 * nh + 2), max(2.5, 0.4 * nl + 1.2)))
    im = ax.imshow(values, cmap=cmap, aspect="auto")
    ax.set_xticks(range(nh))
    ax.set_xticklabels(list(heads) if heads is not None else range(nh), fontsize=8)
    ax.set_yticks(range(nl))
    ax.set_yticklabels(list(layers) if layers is not None else range(nl), fontsize=8)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    if nl * nh <= 100:
        mid = (np.nanmax(values) + np.nanmin(values)) / 2
        for i in range(nl):
            for j in range(nh):
                ax.text(j, i, f"{values[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < mid else "black")
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_head_interactions(res, path) -> Path:
    """Pairwise head ablation: single-head effects (bars), the effect of zeroing each pair, and the interaction
    term pair − single_a − single_b (diverging, centred on 0), values written in the cells."""
    labels = res.labels()
    k = len(labels)
    fig, axes = subplots(1, 3, figsize=(4.0 + 2 * max(4.0, 0.55 * k + 1.5), max(3.4, 0.38 * k + 1.6)),
                         gridspec_kw={"width_ratios": [0.8, 1, 1]})
    ax = axes[0]
    ax.barh(range(k), res.single, color="#3b75af")
    ax.set_yticks(range(k))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel(f"{res.metric}, one head zeroed")
    ax.set_title("single-head effect", fontsize=10)
    lim_pair = float(np.abs(res.pair).max()) or 1.0
    lim_int = float(np.abs(res.interaction).max()) or 1.0
    for ax, m, title, lim in ((axes[1], res.pair, f"both zeroed ({res.metric})", lim_pair),
                              (axes[2], res.interaction, "interaction: both − a − b", lim_int)):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks(range(k))
        ax.set_xticklabels(labels, rotation=90, fontsize=8)
        ax.set_yticks(range(k))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{m[i, j]:.2g}", ha="center", va="center", fontsize=6,
                            color="white" if abs(m[i, j]) > 0.6 * lim else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{res.model}: interactions of the top {k} heads under ablation ({res.texts} texts)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_faithfulness(result, path) -> Path:
    """Deletion and insertion curves (target probability vs fraction of tokens removed / inserted)."""
    fig, axes = subplots(1, 2, figsize=(9, 3.9), layout="constrained")
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for name, curve in result.curves[kind].items():
            ax.plot(result.fractions, curve, marker="o", ms=3, label=name)
        ax.set_xlabel(f"fraction of tokens {'removed' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("target probability")
        ax.set_title(kind, fontsize=10)
    # one legend below both panels (inside, it covered the curves), with each method's two AOPC values
    handles = axes[0].get_lines()
    names = list(result.curves["deletion"])
    labels = [f"{n} (AOPC deletion {result.aopc['deletion'][n]:.3f}, insertion "
              f"{result.aopc['insertion'].get(n, float('nan')):.3f})" for n in names]
    fig.legend(handles, labels, loc="outside lower center", ncol=2 if len(names) > 3 else 1, fontsize=7,
               frameon=False)
    return _save(fig, path)


@styled
def plot_bias(result, path) -> Path:
    """Box plot + points of the attention measured for each word group, with Welch's t and Hedges' g."""
    groups = list(result.values)
    fig, ax = subplots(figsize=(max(4.0, 1.4 * len(groups) + 2), 3.8))
    data = [result.values[g] for g in groups]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1))
    ax.set_xticklabels(groups)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, 1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=10, alpha=0.6)
    ax.set_ylabel(f"attention {result.direction} the group word")
    lines = [f"{t['a']} vs {t['b']}: t={t['t']:.2f}, p={t['p']:.3g}, g={t['hedges_g']:.2f}" for t in result.tests]
    ax.set_title("\n".join(lines[:3]) or "bias probe", fontsize=8)
    fig.text(0.01, -0.02, "Attention weights alone are not evidence of model bias.", fontsize=7, style="italic")
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_dropout(result, path, layer: int = -1) -> Path:
    """MC-dropout attention of one layer (heads averaged): mean, std, coefficient of variation, and the
    distribution of pairwise correlations between runs."""
    li = layer % result.mean.shape[0]
    fig, axes = subplots(1, 4, figsize=(15, 3.6))
    for ax, (name, m) in zip(axes[:3], (("mean", result.mean), ("std", result.std), ("CV", result.cv))):
        im = ax.imshow(m[li].mean(0), cmap="viridis")
        ax.set_title(f"{name} (layer {result.layers[li]}, heads averaged)", fontsize=9)
        ax.set_xticks(range(len(result.tokens)))
        ax.set_xticklabels(result.tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(len(result.tokens)))
        ax.set_yticklabels(result.tokens, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[3].hist(result.pairwise_correlations, bins=20, color="#3b75af")
    axes[3].set_title(f"pairwise correlation of runs (n={result.n_runs})", fontsize=9)
    axes[3].set_xlabel("Pearson r of full attention")
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_token_effects(rows: Sequence[dict[str, Any]], path, *, title: str = "token interventions",
                       metrics: Sequence[str] = ("kl", "attention_mse")) -> Path:
    """Ranked horizontal bars of the effect of each word's intervention (one panel per metric)."""
    labels = [r["word"] for r in rows]
    fig, axes = subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.35 * len(rows) + 1.5), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        ax.barh(range(len(rows)), [r[m] for r in rows], color="#3b75af")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(METRIC_TITLES.get(m, m), fontsize=9)
        # few ticks, with a shared power of ten (1e-5, …) beside the axis: long decimals overlapped
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3), useMathText=True)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


METRIC_TITLES = {"kl": "KL(original ‖ edited prediction)", "attention_mse": "attention change (MSE)",
                 "attention_kl": "attention change (mean KL)", "prob_shift": "probability shift",
                 "logit_diff": "logit change"}


@styled
def plot_benchmark_curves(result, path) -> Path:
    """Faithfulness benchmark: mean deletion and insertion curves per method (top), mean comprehensiveness
    and sufficiency at the ERASER fractions (bottom); the random floor dashed, flagged methods marked."""
    fig, axes = subplots(2, 2, figsize=(10, 7.2), layout="constrained")
    names = [m for m in result.methods if m in result.curves["deletion"]]
    cmap = __import__("matplotlib").colormaps["tab20"]
    palette = [cmap(i) for i in range(20) if i not in (14, 15)]  # tab20's greys are the random floor's
    colors = {m: ("#777777" if m == "random" else "black" if m == "attention" else palette[i % len(palette)])
              for i, m in enumerate(names)}
    flagged = {s["method"] for s in result.summary if s.get("flagged")}
    fr = np.asarray(result.meta.get("eraser_fractions", []), float)
    for ax, kind in zip(axes[0], ("deletion", "insertion")):
        for m in names:
            ax.plot(result.fractions, result.curves[kind][m], color=colors[m], lw=1.4,
                    ls="--" if m == "random" else "-", marker="o", ms=2.5)
        ax.set_xlabel(f"fraction of tokens {'removed' if kind == 'deletion' else 'inserted'} (most important first)")
        ax.set_ylabel("p(target), mean over examples")
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} curve is more faithful)", fontsize=10)
    for ax, kind in zip(axes[1], ("comprehensiveness", "sufficiency")):
        for m in names:
            ys = [result.meta.get("eraser_means", {}).get(f"{m}|{kind}|{round(f * 100):02d}", np.nan) for f in fr]
            ax.plot(fr * 100, ys, color=colors[m], lw=1.4, ls="--" if m == "random" else "-", marker="o", ms=3)
        ax.set_xscale("log")
        ax.set_xticks(fr * 100)
        ax.set_xticklabels([f"{f * 100:g}%" for f in fr])
        ax.set_xlabel("top-k fraction of tokens (ERASER)")
        ax.set_ylabel(f"{kind}, mean")
        ax.set_title(f"{kind} ({'higher' if kind == 'comprehensiveness' else 'lower'} is more faithful)", fontsize=10)
    handles = axes[0, 0].get_lines()
    labels = [m + (" (⚠ failed its check on some examples)" if m in flagged else "") for m in names]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    fig.suptitle(f"{result.meta.get('model', '')}: faithfulness of {len(names)} methods on "
                 f"{result.meta.get('n_examples', '?')} examples (removed tokens → "
                 f"{result.meta.get('replacement_token', '?')})", fontsize=11)
    return _save(fig, path)


@styled
def plot_generation_attribution(res, path) -> Path:
    """Heatmap of a generation's attribution: generated tokens (rows) × prompt and previous tokens (columns),
    each row scaled to max |score| = 1 (signed: red raises the generated token's logit, blue lowers it); not-yet-
    generated cells blank. Encoder-decoders get the source on the left. Steps that failed their check are
    marked ⚠ on their row."""
    from ..render.style import set_token_ticks

    mats = ([("source", res.source_scores, res.source_tokens)] if res.source_scores is not None else []) + \
        [("prompt + previous tokens" if res.source_scores is None else "target prefix", res.scores,
          res.context_tokens)]
    scale = np.nanmax(np.abs(np.concatenate([m for _, m, _ in mats], axis=1)), axis=1, keepdims=True)  # (G, 1)
    scale[~(scale > 0)] = 1.0
    g = len(res.generated_tokens)
    widths = [max(2.0, 0.32 * m.shape[1]) for _, m, _ in mats]
    fig, axes = subplots(1, len(mats), figsize=(sum(widths) + 2.5, 0.32 * g + 2.4), squeeze=False,
                         gridspec_kw={"width_ratios": widths})
    failed = set(res.failed_steps)
    rows = [("⚠ " if i in failed else "") + t for i, t in enumerate(res.generated_tokens)]
    for ax, (title, m, cols) in zip(axes[0], mats):
        im = ax.imshow(np.ma.masked_invalid(m / scale), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto",
                       interpolation="nearest")
        set_token_ticks(ax, "x", cols)
        set_token_ticks(ax, "y", rows)
        ax.set_title(title, fontsize=9)
    axes[0, 0].set_ylabel("generated token")
    fig.colorbar(im, ax=axes[0, -1], fraction=0.04, pad=0.02, label="score / max |score| of the row")
    fig.suptitle(f"{res.model}: {res.method} per generated token" + (" (KV cache)" if res.meta.get("kv_cache") else "")
                 + (f"\nWARNING: {len(failed)} step(s) failed their check" if failed else ""), fontsize=10,
                 color="#b00020" if failed else "black")
    return _save(fig, path)
