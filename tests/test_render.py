"""Figures: checked by structure (axes, tick labels, sizes, files written), not pixels."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
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
    assert len(fig.axes) == 12 + 1  # panels + colour bar
    assert fig.axes[0].get_title() == "H0" and fig.axes[0].get_ylabel() == "L0"
    plt.close(fig)
    fig = rd.layer_means(t)
    assert sum(1 for a in fig.axes if a.get_title().startswith("layer")) == 3
    plt.close(fig)


def hf_seq2seq_trace(**meta):
    """The seq2seq fixture as a Hugging Face capture holds it: target tokens = decoder inputs (start token first)."""
    t = seq2seq_trace()
    t.meta.update({"model_kind": "seq2seq", **meta})
    return t


def test_cross_alignment_axes_are_source_and_target():
    t = hf_seq2seq_trace()
    fig = rd.cross_alignment(t)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "source" and ax.get_ylabel().startswith("target (token predicted")
    # readable labels: SentencePiece's "▁" dropped
    assert [x.get_text() for x in visible_ticklabels(fig, ax, "x")] == ["Das", "ist", "ein", "Test", ".", "</s>"]
    # row i = the decoder step that reads token i ("<pad>" = decoder start) and predicts token i + 1
    assert [y.get_text() for y in visible_ticklabels(fig, ax, "y")] == ["This", "is", "a", "test", ".", "<next>"]
    plt.close(fig)


def test_cross_attention_rows_follow_one_convention_everywhere():
    from attnscope.tasks.alignment import cross_alignment as task_alignment, predicted_labels

    teacher = ["This", "is", "a", "test", ".", "</s>"]  # labels of a teacher-forced capture
    for t, rows in ((hf_seq2seq_trace(), ["This", "is", "a", "test", ".", "<next>"]),
                    (hf_seq2seq_trace(target_labels=teacher), teacher)):
        assert predicted_labels(t) == rows
        figs = {"alignment": rd.cross_alignment(t), "heatmap": rd.head_heatmap(t, 0, 0, "cross"),
                "means": rd.layer_means(t, "cross")}
        for name, fig in figs.items():
            ax = fig.axes[0]
            assert [y.get_text() for y in visible_ticklabels(fig, ax, "y")] == rows, name
            assert "predicted" in ax.get_ylabel() and ax.get_xlabel() == "source", name
        assert "predicted" in rd.layer_head_grid(t, "cross").get_supylabel()
        assert "predicting 'is'" in rd.query_bars(t, 1, stream="cross").axes[0].get_title()
        al = task_alignment(t, drop_special=False)
        assert al.target_labels == rows  # the task's alignment labels rows the same way
    # the decoder's self-attention keeps its input tokens on both axes (a square map)
    fig = rd.head_heatmap(hf_seq2seq_trace(), 0, 0, "decoder_self")
    assert visible_ticklabels(fig, fig.axes[0], "y")[0].get_text() == "<pad>"
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


@pytest.mark.skipif(not rd.mp4_available(), reason="MP4 needs ffmpeg on PATH (apt-get install -y ffmpeg; `make setup` does)")
def test_animation_mp4_one_frame_per_layer(tmp_path):
    import json
    import shutil
    import subprocess

    t = encoder_trace(layers=4, heads=2)
    path = rd.layer_animation(t, tmp_path / "anim.mp4", fps=2, dpi=60)
    assert path.suffix == ".mp4" and path.stat().st_size > 1000
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not found next to ffmpeg")
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
                           capture_output=True, text=True, check=True)
    st = json.loads(probe.stdout)["streams"][0]
    assert int(st["nb_read_frames"]) == 4  # one frame per layer
    assert st["codec_name"] == "h264" and int(st["width"]) % 2 == 0 and int(st["height"]) % 2 == 0


def test_flow_3d_html_is_offline(tmp_path):
    path = rd.write_flow_3d_html(encoder_trace(layers=2, heads=2, words=["[CLS]", "<b>x</b>", "猫", "[SEP]"]), tmp_path / "f.html")
    html = path.read_text(encoding="utf-8")
    import re

    assert not re.search(r"<script[^>]*\ssrc=", html), "plotly.js must be inlined, not loaded from a CDN"
    assert len(html) > 1_000_000  # plotly.js inlined
    assert "<b>x</b>" not in html


SENTENCE = ["[CLS]", "The", "animal", "didn", "'", "t", "cross", "the", "street", "because", "it", "was", "too",
            "tired", ".", "[SEP]"]


def test_short_sentence_shows_every_label_in_every_figure():
    """Thinning starts only when labels would overlap: a 16-token sentence keeps all of them, in small panels too."""
    t = encoder_trace(layers=6, heads=2, words=SENTENCE)
    figs = {"heatmap": rd.head_heatmap(t, 0, 0), "layer_means": rd.layer_means(t),
            "rollout": rd.rollout_figure(run_analysis("rollout", t)), "bars": rd.query_bars(t, 2),
            "animation-like": rd.token_map(run_analysis("flow", t))}
    for name, fig in figs.items():
        fig.canvas.draw()
        for ax in fig.axes:
            if not ax.get_images() and not ax.patches:
                continue  # colour bars
            for axis in ("x", "y"):
                target = ax.xaxis if axis == "x" else ax.yaxis
                if not hasattr(target.get_major_locator(), "stride"):
                    continue
                labels = visible_ticklabels(fig, ax, axis)
                assert len(labels) == target.get_major_locator().n, (name, axis)
                assert no_overlap(fig, labels), (name, axis)
        plt.close(fig)


def test_every_token_figure_thinned_without_overlap_at_512_tokens():
    t = causal_trace(layers=2, heads=2, words=[f"tok{i}" for i in range(512)])
    figs = [rd.layer_means(t), rd.rollout_figure(run_analysis("rollout", t)), rd.query_bars(t, 511),
            rd.curves_figure(run_analysis("position_variance", t))]
    for fig in figs:
        fig.canvas.draw()
        n_axes = 0
        for ax in fig.axes:
            for axis in ("x", "y"):
                target = ax.xaxis if axis == "x" else ax.yaxis
                if not hasattr(target.get_major_locator(), "stride"):
                    continue
                labels = visible_ticklabels(fig, ax, axis)
                assert 5 <= len(labels) < 512 and no_overlap(fig, labels)
                n_axes += 1
        assert n_axes >= 1
        plt.close(fig)


def test_causal_maps_grey_out_masked_cells():
    t = causal_trace(layers=2, heads=2)
    n = len(t.tokens["input"])
    fig = rd.head_heatmap(t, 0, 0)
    ax = fig.axes[0]
    img = ax.get_images()[0].get_array()
    assert img.mask.sum() == n * (n - 1) // 2  # the upper triangle is masked, drawn in MASKED_COLOUR
    assert len(ax.texts) == n * (n + 1) // 2  # only visible cells carry values
    assert "masked" in fig.axes[1].get_ylabel()
    plt.close(fig)
    fig = rd.rollout_figure(run_analysis("rollout", t))
    assert fig.axes[0].get_images()[0].get_array().mask.sum() == n * (n - 1) // 2
    plt.close(fig)
    fig = rd.head_heatmap(encoder_trace(), 0, 0)  # encoders: nothing masked, no note
    assert "masked" not in fig.axes[1].get_ylabel()
    plt.close(fig)


def test_projection_labels_do_not_overlap_when_there_is_room():
    p = run_analysis("head_projection", encoder_trace(layers=6, heads=12, words=SENTENCE), method="pca")
    fig = rd.projection_figure(p)
    texts = [t for t in fig.axes[0].texts]
    assert len(texts) == 72 and {t.get_text() for t in texts} == set(p.labels)
    r = fig.canvas.get_renderer()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, r) for t in texts]  # the label text, not its leader line
    overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    naive = rd.projection_figure(p, annotate=False)
    ax = naive.axes[0]
    naive_boxes = [Text.get_window_extent(ax.annotate(lab, (x, y), xytext=(3, 3), textcoords="offset points",
                                                      fontsize=7), naive.canvas.get_renderer())
                   for (x, y), lab in zip(p.coords, p.labels)]
    naive_overlaps = sum(a.overlaps(b) for i, a in enumerate(naive_boxes) for b in naive_boxes[i + 1:])
    assert overlaps <= naive_overlaps / 3, (overlaps, naive_overlaps)  # 60 heads crowd one spot here
    plt.close(naive)
    plt.close(fig)


# ------------------------------------------------------------------ figure hygiene (axes, colour bars, state)
def _figure_functions():
    t, c = encoder_trace(layers=2, heads=2), causal_trace(layers=2, heads=2)
    return {"head_heatmap": lambda: rd.head_heatmap(t, 0, 0), "grid": lambda: rd.layer_head_grid(t),
            "layer_means": lambda: rd.layer_means(c), "cross": lambda: rd.cross_alignment(seq2seq_trace()),
            "bars": lambda: rd.query_bars(t, 1), "dashboard": lambda: rd.plot(run_analysis("head_stats", t)),
            "rollout": lambda: rd.plot(run_analysis("rollout", c)),
            "flow": lambda: rd.plot(run_analysis("flow", c, outputs=[3])),
            "distance": lambda: rd.plot(run_analysis("distance_profile", c)),
            "memory": lambda: rd.plot(run_analysis("memory_estimate", c))}


def test_returned_figures_are_not_registered_with_pyplot():
    """A notebook shows a returned figure once: pyplot must not also hold it (and show it again)."""
    plt.close("all")
    for name, make in _figure_functions().items():
        fig = make()
        assert plt.get_fignums() == [], name
        fig.canvas.draw()  # an Agg canvas is attached: the figure renders without pyplot
        assert fig.canvas.get_renderer() is not None


def test_grid_and_layer_means_have_query_key_titles_and_colour_bar():
    t = encoder_trace(layers=3, heads=4)
    fig = rd.layer_head_grid(t)
    assert "key" in fig.get_supxlabel() and "query" in fig.get_supylabel()
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "attention weight" in bars[0].get_ylabel()
    assert len(fig.axes) == 12 + 1
    fig = rd.layer_means(causal_trace(layers=5, heads=2), cols=3)  # 2 rows × 3 columns, one panel empty
    panels = [a for a in fig.axes if a.get_images()]
    assert len(panels) == 5 and any(a.get_label() == "<colorbar>" for a in fig.axes)
    assert [a.get_ylabel() for a in panels] == ["query", "", "", "query", ""]
    # the key axis is titled on the lowest panel of each column (panel 2's column has no panel below it)
    assert [a.get_xlabel() for a in panels] == ["", "", "key", "key", "key"]


def test_svg_keeps_text_as_text(tmp_path):
    fig = rd.query_bars(encoder_trace(), 2)
    (path,) = rd.save_figure(fig, tmp_path / "bars", formats=("svg",))
    svg = path.read_text(encoding="utf-8")
    assert "<text" in svg and "cat</text>" in svg  # a token label, as text (not glyph paths)


def test_single_output_flow_is_drawn_as_bars():
    c = causal_trace(layers=2, heads=2)
    r = run_analysis("flow", c, outputs=[9])
    fig = rd.plot(r)
    ax = fig.axes[0]
    assert not ax.get_images() and len(ax.patches) == 10
    assert [round(p.get_height(), 6) for p in ax.patches] == [round(float(v), 6) for v in r.values[-1, 0]]
    assert ax.get_xlabel() == "input token"
    fig = rd.plot(run_analysis("flow", c, outputs=[8, 9]))  # two rows stay a heatmap
    assert fig.axes[0].get_images()


def test_distance_profile_leaves_out_thin_distances():
    c = causal_trace(layers=1, heads=2)  # 10 tokens: distance d is averaged over 10 - d queries
    r = run_analysis("distance_profile", c)
    assert r.meta["counts"].tolist() == [10 - d for d in range(10)]
    fig = rd.plot(r)
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    least = r.meta["min_queries"]
    assert line.get_xdata().tolist() == [d for d in range(10) if 10 - d >= least]
    assert f"fewer than {least} queries" in ax.get_xlabel()


def test_flow_3d_text_is_escaped_once_and_every_token_in_view(tmp_path):
    words = ["[CLS]", "didn", "'", "t", "A&B", "<b>x</b>", "[SEP]"]
    t = encoder_trace(layers=2, heads=2, words=words)
    fig = rd.flow_3d_figure(t)
    scene = fig.layout.scene
    # tick labels are plain text: the token as written ("<" kept from being read as a tag by a zero-width space)
    assert [s.replace("\u200b", "") for s in scene.xaxis.ticktext] == words
    assert "<b>" not in "".join(scene.xaxis.ticktext)
    hover = [x for tr in fig.data if tr.text for x in tr.text]
    assert hover[2].startswith("' ·") and hover[4].startswith("A&amp;B ·")  # plotly decodes &amp; in hover text
    assert not any("&#x27;" in h or "&amp;#" in h or "&amp;amp;" in h for h in hover)
    assert tuple(scene.xaxis.range) == (-0.5, len(words) - 0.5)  # the axis box holds the first and last token
    html = rd.write_flow_3d_html(t, tmp_path / "f.html").read_text(encoding="utf-8")
    data = html[html.index("Plotly.newPlot("):]  # the figure's data (plotly.js itself precedes it)
    assert "&#x27;" not in data and "&amp;#" not in data


def test_constant_panels_get_a_readable_range():
    from attnscope.analysis.results import Curves
    from attnscope.render.style import constant_ylim, subplots

    x = np.arange(4.0)
    fig = rd.curves_figure(Curves(x, {"layer 0": np.zeros(4)}, "flat", "x", "y"))
    assert fig.axes[0].get_ylim() == (0.0, 1.0)  # matplotlib alone gives -0.055..0.055
    cases = [([0.0, 0.0], True, (0.0, 1.0)), ([1.0, 1.0], True, (0.0, 1.0)), ([0.0], False, (0.0, 1.0)),
             ([3.0, 3.0], False, (0.0, 6.0)), ([-2.0], False, (-4.0, 0.0))]
    for values, rate, limits in cases:
        fig, ax = subplots()
        ax.plot(values)
        constant_ylim(ax, values, rate=rate)
        assert ax.get_ylim() == limits, (values, rate)
    fig, ax = subplots()
    ax.plot([0.0, 0.5])
    before = ax.get_ylim()
    constant_ylim(ax, [0.0, 0.5], rate=True)  # varying data: left alone
    assert ax.get_ylim() == before


def test_speech_figures_stop_at_the_end_of_the_audio():
    """Whisper pads audio to 30 s: source-axis figures show only the encoder frames that hold audio."""
    t = seq2seq_trace()  # 6 source positions standing in for encoder frames
    t.meta.update(frame_seconds=0.02, audio_seconds=0.07)  # ceil(0.07 / 0.02) = 4 frames hold audio
    w = {s: t.weights(s).numpy() for s in t.streams}
    cases = [(rd.head_heatmap(t, 1, 2, stream="cross"), w["cross"][1, 2, :, :4]),
             (rd.head_heatmap(t, 0, 1, stream="encoder_self"), w["encoder_self"][0, 1, :4, :4]),
             (rd.head_heatmap(t, 0, 1, stream="decoder_self"), w["decoder_self"][0, 1]),  # not a source axis
             (rd.cross_alignment(t, layer=1), w["cross"][1].mean(0)[:, :4]),
             (rd.layer_means(t, stream="cross"), w["cross"][0].mean(0)[:, :4])]
    for fig, want in cases:
        got = np.ma.getdata(fig.axes[0].images[0].get_array())
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert len([x for x in fig.axes[0].get_xticklabels() if x.get_text()]) <= want.shape[1]
    assert "4 frames holding audio, of 6" in rd.cross_alignment(t, layer=1).axes[0].get_title()
    bars = rd.query_bars(t, 2, layer=0, head=0, stream="cross")
    np.testing.assert_allclose([p.get_height() for p in bars.axes[0].patches], w["cross"][0, 0, 2, :4], rtol=1e-6)
    plain = seq2seq_trace()  # no audio metadata: every source position is shown
    assert np.ma.getdata(rd.head_heatmap(plain, 1, 2, stream="cross").axes[0].images[0].get_array()).shape == (6, 6)
    plt.close("all")
