"""The `attnscope` command from a subprocess: output, files, and bad input (clear message, exit 2, no traceback)."""

import subprocess
import sys

import pytest


def run(*args, stdin: bytes | None = None, cwd=None):
    return subprocess.run([sys.executable, "-m", "attnscope", *args], input=stdin, capture_output=True, cwd=cwd,
                          timeout=300)


def test_analyze_writes_figures_and_trace(tmp_path):
    r = run("analyze", "The cat sat on the mat.", "--out", str(tmp_path / "o"), "--save-trace", "--layers", "0,5",
            "--format", "png", "--format", "svg")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "entropy" in out and "first-token mass" in out
    for name in ("grid_self.png", "grid_self.svg", "layer_means_self.png", "trace.safetensors"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    from attnscope import AttentionTrace

    t = AttentionTrace.load(tmp_path / "o" / "trace.safetensors")
    assert t.layers["self"] == [0, 5] and t.texts["input"] == "The cat sat on the mat."


def test_analyze_reads_stdin_and_file(tmp_path):
    r = run("analyze", "-", "--out", str(tmp_path / "a"), "--layers", "1", "--heads", "0-1", stdin="from stdin".encode())
    assert r.returncode == 0, r.stderr.decode()
    f = tmp_path / "in.txt"
    f.write_text("日本語のテキストも大丈夫。", encoding="utf-8")
    r = run("analyze", "--file", str(f), "--out", str(tmp_path / "b"), "--layers", "1")
    assert r.returncode == 0, r.stderr.decode()


@pytest.mark.parametrize("args, stdin, message", [
    (["analyze", "   "], None, "empty or only whitespace"),
    (["analyze", "hi", "--layers", "9"], None, "layer 9 is out of range: minilm (self) has layers 0..5"),
    (["analyze", "hi", "--heads", "12"], None, "has heads 0..11"),
    (["analyze", "hi", "--model", "nosuchmodel"], None, "valid models: minilm, smollm2, whisper-tiny-en"),
    (["analyze", "-"], b"caf\xe9 invalid", "not valid UTF-8"),
    (["analyze", "word " * 600], None, "accepts at most 512"),
    (["analyze", "hi", "--format", "gif"], None, "--format 'gif'"),
    (["analyze", "hi", "--layers", "a-b"], None, "not a list of layer indices"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, stdin, message):
    out = tmp_path / "o"
    r = run(*args, "--out", str(out), stdin=stdin)
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_truncate_says_what_was_cut(tmp_path):
    r = run("analyze", "word " * 600, "--truncate", "--layers", "0", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr.decode()
    assert "kept 512 of 602 tokens" in r.stdout.decode()


def test_models_lists_catalogue():
    r = run("models")
    assert r.returncode == 0
    for name in ("minilm", "smollm2", "whisper-tiny-en"):
        assert name in r.stdout.decode()
