"""Layer-by-layer animation of the head-averaged attention map (GIF; MP4 where ffmpeg exists)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
from matplotlib import animation

from ..errors import InputError, UnknownNameError
import numpy as np
from matplotlib.colors import Normalize, PowerNorm

from ..analysis._common import token_labels
from .figures import LONG_INPUT, MASKED_COLOUR, _weight_label, axis_titles
from .style import SEQUENTIAL_CMAP, set_token_ticks, style, subplots

FORMATS = ("gif", "mp4")


def mp4_available() -> bool:
    return animation.writers.is_available("ffmpeg")


def layer_animation(trace, path: str | os.PathLike, stream: str | None = None, fps: float = 1.5,
                    fmt: str | None = None, dpi: int = 100) -> Path:
    """Write an animation whose frame k is layer k's map averaged over heads; returns the path.

    GIF via matplotlib's PillowWriter (always available); MP4 needs ffmpeg on PATH.
    """
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower() or "gif"
    if fmt not in FORMATS:
        raise UnknownNameError("animation format", fmt, FORMATS)
    if fmt == "mp4" and not mp4_available():
        raise InputError("MP4 needs ffmpeg on PATH (e.g. `apt-get install ffmpeg`); write a .gif instead")
    path = path.with_suffix("." + fmt)
    s = trace.resolve_stream(stream)
    w = trace.weights(s).numpy().mean(1)  # (L, Nq, Nk)
    ql, kl = token_labels(trace, s, "query"), token_labels(trace, s, "key")
    with style():
        n = max(len(ql), len(kl))
        side = 6.5 if n <= 64 else 9.0
        fig, ax = subplots(figsize=(side + 1.2, side), layout="constrained")
        ok = trace.allowed_mask(s)
        ok = None if ok is None else ok.numpy()

        def shown(m):
            return m if ok is None else np.ma.masked_array(m, mask=~ok)

        long_input = n > LONG_INPUT
        cm = matplotlib.colormaps[SEQUENTIAL_CMAP].with_extremes(bad=MASKED_COLOUR)
        norm = PowerNorm(0.5, vmin=0, vmax=1) if long_input else Normalize(0, 1)  # as in the static heatmaps
        im = ax.imshow(shown(w[0]), cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
        set_token_ticks(ax, "x", kl)
        set_token_ticks(ax, "y", ql)
        xt, yt = axis_titles(s)
        ax.set_xlabel(xt)
        ax.set_ylabel(yt)
        fig.colorbar(im, ax=ax, shrink=0.8, label=_weight_label(ok, "mean weight over heads", n))
        title = ax.set_title("")

        def frame(k: int):
            im.set_data(shown(w[k]))
            title.set_text(f"{trace.model_id or 'attention'} — {s}, layer {trace.layers[s][k]} (mean over heads)")
            return [im, title]

        anim = animation.FuncAnimation(fig, frame, frames=w.shape[0], interval=1000 / fps, blit=False)
        writer = animation.PillowWriter(fps=fps) if fmt == "gif" else animation.FFMpegWriter(fps=fps)
        path.parent.mkdir(parents=True, exist_ok=True)
        anim.save(str(path), writer=writer, dpi=dpi)
    return path
