"""Attribution figures: checked by structure (legends, tick labels), not pixels."""

import numpy as np


def _capture_figures(monkeypatch, module):
    """Keep the figures a plot function would save (instead of writing them)."""
    figs = []

    def keep(fig, path):
        figs.append(fig)
        return path

    monkeypatch.setattr(module, "_save", keep)
    return figs


def _overlapping(fig, texts):
    r = fig.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(r) for t in texts if t.get_text()), key=lambda b: b.x0)
    return [(a, b) for a, b in zip(boxes, boxes[1:]) if a.overlaps(b)]


def test_token_effect_ticks_do_not_overlap(monkeypatch, tmp_path):
    from attnscope.attribution import plots

    figs = _capture_figures(monkeypatch, plots)
    words_ = ["The", "movie", "was", "surprisingly", "good", ",", "though", "far", "."]
    rng = np.random.default_rng(0)
    rows = [{"word": w, "kl": float(v), "attention_mse": float(m)}  # tiny values: long tick decimals overlapped
            for w, v, m in zip(words_, rng.uniform(2e-5, 7e-5, 9), rng.uniform(8e-4, 1.3e-3, 9))]
    plots.plot_token_effects(rows, tmp_path / "cf.png")
    (fig,) = figs
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticklabels() if t.get_visible()]
        assert len([t for t in ticks if t.get_text()]) >= 3
        assert not _overlapping(fig, ticks), ax.get_title()
        assert ax.xaxis.get_offset_text().get_text()  # the shared power of ten is shown
    assert fig.axes[0].get_title().startswith("KL")


def test_faithfulness_legend_outside_the_curves(monkeypatch, tmp_path):
    from attnscope.attribution import plots
    from attnscope.attribution.aopc import FaithfulnessResult

    figs = _capture_figures(monkeypatch, plots)
    fr = np.linspace(0, 1, 11)
    names = ["attention", "rollout", "attn_x_grad", "chefer", "occlusion", "random"]
    curves = {"deletion": {n: 0.9 - 0.5 * fr ** (k + 1) for k, n in enumerate(names)},
              "insertion": {n: 0.4 + 0.5 * fr ** (1 / (k + 1)) for k, n in enumerate(names)}}
    aopc = {kind: {n: 0.1 * k for k, n in enumerate(names)} for kind in curves}
    plots.plot_faithfulness(FaithfulnessResult(fractions=fr, curves=curves, aopc=aopc, target=0, tokens=[], meta={}),
                            tmp_path / "f.png")
    (fig,) = figs
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent(r)
    assert not any(legend.overlaps(ax.get_window_extent(r)) for ax in fig.axes)
    assert "AOPC deletion 0.100, insertion 0.100" in [t.get_text() for t in fig.legends[0].get_texts()][1]
