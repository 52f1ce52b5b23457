"""Figure of perturbation robustness: attention divergence from the clean attention against the noise scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps

from .style import save_figure, styled, subplots


_PREDICTION_LABELS = {"kl": "KL of the prediction (nats)", "flip_rate": "argmax flip rate",
                      "hidden_change": "last hidden state ‖h − h₀‖ / ‖h₀‖"}


@styled
def plot_robustness(result, path, title: str = "") -> Path:
    """Three panels over the noise scale: JS divergence and KL(perturbed ‖ clean), one line per layer (mean
    over its heads; band: the mean over heads of the standard deviation over seeds), and the prediction
    change (mean ± std over seeds, the bar cut at 0)."""
    x = np.asarray(result.scales, float)
    L = len(result.layers)
    cmap = colormaps["viridis"]
    step = max(1, -(-L // 8))
    fig, axes = subplots(1, 3, figsize=(12.5, 3.6))
    for ax, mean, std, name in ((axes[0], result.js_mean, result.js_std, "JS divergence (nats; at most ln 2)"),
                                (axes[1], result.kl_mean, result.kl_std, "KL(perturbed ‖ clean) (nats)")):
        for li, layer in enumerate(result.layers):
            m = mean[:, li].mean(-1)  # (S,): mean over heads
            s = np.nan_to_num(std[:, li].mean(-1))
            c = cmap(li / max(1, L - 1))
            shown = li % step == 0 or li == L - 1  # at most ~8 legend entries
            ax.plot(x, m, marker="o", ms=3, color=c, label=f"layer {layer}" if shown else None)
            if shown:  # bands of the labelled layers only: 30 overlapping bands hide the lines
                ax.fill_between(x, np.maximum(m - s, 0), m + s, color=c, alpha=0.12, lw=0)
        ax.set_xlabel("noise scale σ")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for name, v in result.prediction.items():
        v = np.asarray(v, float)
        low = np.minimum(v[:, 1], v[:, 0])  # every quantity here is >= 0: the bar stops at 0
        ax.errorbar(x, v[:, 0], yerr=[low, v[:, 1]], marker="o", ms=3, capsize=2,
                    label=_PREDICTION_LABELS.get(name, name))
    ax.set_xlabel("noise scale σ")
    ax.set_ylabel("prediction change")
    ax.legend(fontsize=7)
    fig.suptitle(title or f"{result.meta.get('model', '')}: {result.kind} noise on the {result.target}, "
                 f"{result.n_seeds} seeds; robustness score {result.model_score:.3f}", fontsize=10)
    fig.tight_layout()
    out = save_figure(fig, Path(path), formats=(Path(path).suffix.lstrip(".") or "png",), dpi=110)
    return out[0]
