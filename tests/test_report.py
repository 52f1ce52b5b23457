"""The HTML report: self-contained, offline, escaped; the `attnscope report` command."""

from __future__ import annotations

import re

import pytest

from attnscope.render.report import build_report, write_report

from conftest_traces import causal_trace, encoder_trace, seq2seq_trace

EVIL = "<script>alert('x')</script>"


def _assert_offline(html: str):
    assert not re.search(r"<script", html, re.I), "the report must carry no script"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I), "no external resources"
    assert "data:image/png;base64," in html


def test_report_escapes_user_text_and_is_offline(tmp_path):
    t = encoder_trace(layers=2, heads=2, words=["[CLS]", EVIL, "猫", "[SEP]"])
    t.texts["input"] = f"{EVIL} 猫 & <b>dog</b>"
    t.meta["note"] = EVIL
    path = write_report(t, tmp_path / "out", title=EVIL)
    html = path.read_text(encoding="utf-8")
    _assert_offline(html)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<b>dog</b>" not in html and "&lt;b&gt;dog&lt;/b&gt;" in html
    assert "猫" in html


def test_report_tables_and_sections():
    html = build_report(causal_trace(layers=2, heads=3))
    assert html.count("<table>") == 2  # head statistics + head roles
    for col in ("entropy", "future_attention_ratio", "previous_token", "induction", "role"):
        assert f">{col}</th>" in html
    assert "rollout" in html and "Metadata" in html and "attention vs distance" in html


def test_report_for_encoder_decoder_has_cross_alignment():
    html = build_report(seq2seq_trace(layers=1, heads=2))
    _assert_offline(html)
    assert "cross-attention alignment" in html
    assert html.count("<table>") == 3 + 2  # stats for 3 streams, roles for the 2 self-attention streams


def test_report_command_on_saved_trace(tmp_path):
    from typer.testing import CliRunner

    import attnscope.cli as cli

    cli._register() if not any(c.name == "report" for c in cli.app.registered_commands) else None
    t = encoder_trace(layers=1, heads=2)
    f = t.save(tmp_path / "t.safetensors")
    res = CliRunner().invoke(cli.app, ["report", "--trace", str(f), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.html").is_file()
    res = CliRunner().invoke(cli.app, ["report", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0


@pytest.mark.slow
def test_report_on_real_minilm(tmp_path):
    from attnscope.capture import capture
    from attnscope.models import load_model

    t = capture(load_model("minilm"), f"The cat sat on the mat. {EVIL}", mode="full")
    html = write_report(t, tmp_path).read_text(encoding="utf-8")
    _assert_offline(html)
    assert "&lt;script&gt;" in html


def test_report_and_explorer_carry_the_interpretation_caveat():
    import html as _html
    from pathlib import Path

    import attnscope.server as server_pkg
    from attnscope.caveat import ATTENTION_CAVEAT
    from attnscope.render.notebook import trace_html

    page = build_report(encoder_trace(layers=2, heads=2))
    at = page.find(_html.escape(ATTENTION_CAVEAT))
    assert at > 0 and at < page.find("data:image/png")  # shown before the first attention figure
    js = (Path(server_pkg.__file__).parent / "static" / "explorer.js").read_text(encoding="utf-8")
    assert f'const CAVEAT = "{ATTENTION_CAVEAT}";' in js  # the one wording, word for word
    assert 'el("p", { class: "caveat"' in js and "this.caveat" in js  # mounted on every explorer page
    assert ATTENTION_CAVEAT in trace_html(encoder_trace(layers=2, heads=2), full_page=True)  # notebook / saved page
