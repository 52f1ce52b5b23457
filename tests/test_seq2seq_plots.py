"""seq2seq figures: checked by structure (axis limits), not pixels."""

import pytest

from attnscope.seq2seq import plots


@pytest.fixture
def figures(monkeypatch):
    figs = []
    save = plots._save

    def keep(fig, path, title=""):
        figs.append(fig)
        return save(fig, path, title)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_all_zero_rate_panel_gets_the_rate_range(figures, tmp_path):
    plots.plot_bars({"bahdanau": {"em": 0.0, "bleu": 12.0}, "luong": {"em": 0.0, "bleu": 20.0}},
                    [("em", "exact match"), ("bleu", "BLEU")], tmp_path / "b.png")
    plots.plot_lines(["1-3", "4-6"], {"a": {"exact_match": [0.0, 0.0], "bleu": [3.0, 3.0]}},
                     [("exact_match", "exact match"), ("bleu", "BLEU")], tmp_path / "l.png")
    bars, lines = figures
    assert bars.axes[0].get_ylim() == (0.0, 1.0)  # not -0.04..0.04
    assert bars.axes[1].get_ylim()[0] == 0.0 and bars.axes[1].get_ylim()[1] > 20  # varying data: matplotlib's own
    assert lines.axes[0].get_ylim() == (0.0, 1.0)
    assert lines.axes[1].get_ylim() == (0.0, 6.0)  # a constant that is not a rate: 0 .. twice the value
    assert [t.get_text() for t in bars.axes[0].texts] == ["0", "0"]  # values written on the (empty) bars
