"""Task figures: checked by structure (cell geometry), not pixels."""

from attnscope.tasks import plots
from attnscope.tasks.sentiment import Misclassified


def test_mistakes_table_text_stays_inside_its_cells(monkeypatch, tmp_path):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    errors = [
        Misclassified("1", "@united you lost my bag AGAIN and the agent at the desk just shrugged, best airline "
                      "ever!!! #not #fail http://t.co/xyz", "negative", "positive", 0.97, ["best", "airline", "ever"]),
        Misclassified("2", "SO ANGRY AT THIS AIRLINE " * 12, "negative", "neutral", 0.9,  # wide capitals
                      ["ANGRY", "AIRLINE", "WWWWWWWWWWWWWWWWWWWWWWWWWWWWWW"]),
        Misclassified("3", "W" * 120 + " ok", "positive", "neutral", 0.6, []),  # one word wider than its cell
        Misclassified("4", "ok", "positive", "neutral", 0.55, []),
    ]
    plots.plot_misclassified(errors, tmp_path / "m.png")
    (fig,) = figs
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    cells = fig.axes[0].tables[0].get_celld()
    assert len(cells) == 5 * 5
    for (i, j), cell in cells.items():
        box, text = cell.get_window_extent(r), cell.get_text().get_window_extent(r)
        assert box.x0 <= text.x0 and text.x1 <= box.x1 and box.y0 <= text.y0 and text.y1 <= box.y1, (i, j)
    assert cells[(2, 3)].get_text().get_text().endswith("…")  # more than 3 lines: cut, and says so
    assert "ok" in cells[(3, 3)].get_text().get_text()  # the over-wide word is broken, the rest kept
