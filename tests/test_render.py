"""Figures: checked by structure (axes, tick labels, sizes, files written), not pixels."""

from __future__ import annotations

import warnings

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnscope import render as rd  # noqa: E402
from attnscope.analysis import run_analysis  # noqa: E402
from attnscope.errors import InputError, UnknownNameError  # noqa: E402

from conftest_traces import causal_trace, encoder_trace, seq2seq_trace  # noqa: E402

JA = ["[CLS]", "猫", "が", "マット", "の", "上", "に", "座", "った", "。", "[SEP]"]


def visible_ticklabels(fig, ax, axis):
    fig.canvas.draw()
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t for t in labels if t.get_text() and t.get_visible()]


def no_overlap(fig, labels):
    r = fig.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(r) for t in labels), key=lambda b: (b.x0, b.y0))
    return all(not a.overlaps(b) for a, b in zip(boxes, boxes[1:]))


def test_head_heatmap_short_is_annotated_with_all_tokens():
    t = encoder_trace()
    fig = rd.head_heatmap(t, 1, 0)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heatmap + colourbar
    assert [x.get_text() for x in visible_ticklabels(fig, ax, "x")] == t.tokens["input"].text
    assert len(ax.texts) == 9 * 9  # every cell annotated
    assert "layer 1, head 0" in ax.get_title()
    plt.close(fig)


def test_ticks_thinned_without_overlap_at_512_tokens():
    t = causal_trace(layers=1, heads=1, words=[f"token{i}" for i in range(512)])
    fig = rd.head_heatmap(t, 0, 0)
    ax = fig.axes[0]
    assert len(ax.texts) == 0  # no annotations at this size
    for axis in ("x", "y"):
        labels = visible_ticklabels(fig, ax, axis)
        assert 10 <= len(labels) < 512
        assert no_overlap(fig, labels)
    plt.close(fig)


def test_japanese_tokens_render_without_missing_glyphs(tmp_path):
    if not rd.has_cjk_font():
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    t = encoder_trace(words=JA)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" is a UserWarning
        fig = rd.head_heatmap(t, 0, 1)
        paths = rd.save_figure(fig, tmp_path / "ja")
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_save_figure_formats_and_errors(tmp_path):
    fig = rd.query_bars(encoder_trace(), 2)
    assert rd.save_figure(fig, tmp_path / "bars.png", formats=("svg",), close=False) == [tmp_path / "bars.svg"]
    assert (tmp_path / "bars.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(UnknownNameError):
        rd.save_figure(fig, tmp_path / "x", formats=("bmp",))
    plt.close(fig)


def test_layer_head_grid_and_layer_means_structure():
    t = encoder_trace(layers=3, heads=4)
    fig = rd.layer_head_grid(t)
    assert len(fig.axes) == 12
    assert fig.axes[0].get_title() == "H0" and fig.axes[0].get_ylabel() == "L0"
    plt.close(fig)
    fig = rd.layer_means(t)
    assert sum(1 for a in fig.axes if a.get_title().startswith("layer")) == 3
    plt.close(fig)


def test_cross_alignment_axes_are_source_and_target():
    t = seq2seq_trace()
    fig = rd.cross_alignment(t)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "source" and ax.get_ylabel() == "target"
    assert [x.get_text() for x in visible_ticklabels(fig, ax, "x")] == t.tokens["source"].text
    assert [y.get_text() for y in visible_ticklabels(fig, ax, "y")] == t.tokens["target"].text
    plt.close(fig)
    with pytest.raises(InputError, match="cross"):
        rd.cross_alignment(encoder_trace())


def test_dashboard_has_four_panels():
    fig = rd.stats_dashboard(run_analysis("head_stats", causal_trace()), "entropy")
    titles = [a.get_title() for a in fig.axes]
    assert any("by layer" in x for x in titles) and any("by head" in x for x in titles)
    assert any("distribution" in x for x in titles) and any("layer × head" in x for x in titles)
    plt.close(fig)


def test_plot_dispatch_for_every_result_type():
    t = encoder_trace()
    results = [run_analysis(n, t) for n in ("head_stats", "head_roles", "rollout", "flow", "distance_profile",
                                            "head_diversity", "attention_graph", "memory_estimate")]
    results.append(run_analysis("head_projection", t, method="pca"))
    results.append(run_analysis("compare", t, other=encoder_trace(seed=3)))
    for r in results:
        fig = rd.plot(r)
        assert fig.axes and fig.get_size_inches().min() >= 3
        plt.close(fig)


def test_projection_points_labelled():
    p = run_analysis("head_projection", encoder_trace(), method="pca")
    fig = rd.projection_figure(p)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"L0H0", "L2H3"} <= texts and len(texts) == 12
    plt.close(fig)


def test_animation_gif_has_one_frame_per_layer(tmp_path):
    from PIL import Image

    path = rd.layer_animation(encoder_trace(layers=3, heads=2), tmp_path / "anim.gif", dpi=40)
    with Image.open(path) as im:
        assert im.n_frames == 3
    if not rd.mp4_available():
        with pytest.raises(InputError, match="ffmpeg"):
            rd.layer_animation(encoder_trace(), tmp_path / "anim.mp4")


def test_flow_3d_html_is_offline(tmp_path):
    path = rd.write_flow_3d_html(encoder_trace(layers=2, heads=2, words=["[CLS]", "<b>x</b>", "猫", "[SEP]"]), tmp_path / "f.html")
    html = path.read_text(encoding="utf-8")
    import re

    assert not re.search(r"<script[^>]*\ssrc=", html), "plotly.js must be inlined, not loaded from a CDN"
    assert len(html) > 1_000_000  # plotly.js inlined
    assert "<b>x</b>" not in html
