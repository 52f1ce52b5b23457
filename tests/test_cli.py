"""The `attnscope` command from a subprocess: output, files, and bad input (clear message, exit 2, no traceback)."""

import subprocess
import sys
from pathlib import Path

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
    from attnscope.caveat import ATTENTION_CAVEAT_SHORT

    flat = " ".join(out.split())  # the console wraps long lines
    assert flat.index("effective pos.") < flat.index(ATTENTION_CAVEAT_SHORT) < flat.index("wrote ")
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
    from attnscope.cli import main

    with pytest.raises(SystemExit) as e:  # in this process: the subprocess path is checked just above
        main(["analyze", "--file", str(f), "--out", str(tmp_path / "b"), "--layers", "1"])
    assert e.value.code == 0 and (tmp_path / "b" / "grid_self.png").stat().st_size > 0


@pytest.mark.parametrize("args, stdin, message", [
    (["analyze", "   "], None, "empty or only whitespace"),
    (["analyze", "hi", "--layers", "9"], None, "layer 9 is out of range: minilm (self) has layers 0..5"),
    (["analyze", "hi", "--heads", "12"], None, "has heads 0..11"),
    (["analyze", "hi", "--model", "nosuchmodel"], None, "minilm, smollm2, whisper-tiny-en"),
    (["analyze", "-"], b"caf\xe9 invalid", "not valid UTF-8"),
    (["analyze", "word " * 600], None, "accepts at most 512"),
    (["analyze", "hi", "--format", "gif"], None, "--format 'gif'"),
    (["analyze", "hi", "--layers", "a-b"], None, "not a list of layer indices"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch, args, stdin, message):
    """In this process through main() (a subprocess per case cost ~5 s of imports each); the subprocess
    path itself is covered by the tests above and below."""
    import io

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    out = tmp_path / "o"
    cli_error(capsys, [*args, "--out", out], [message])
    assert not out.exists()  # nothing half-written


def test_truncate_says_what_was_cut(tmp_path, capsys):
    from attnscope.cli import main

    with pytest.raises(SystemExit) as e:
        main(["analyze", "word " * 600, "--truncate", "--layers", "0", "--out", str(tmp_path / "o")])
    assert e.value.code == 0
    assert "kept 512 of 602 tokens" in " ".join(capsys.readouterr().out.split())


def test_models_lists_catalogue():
    r = run("models")
    assert r.returncode == 0
    for name in ("minilm", "smollm2", "whisper-tiny-en"):
        assert name in r.stdout.decode()


# ---------------------------------------------------------------------------- fast start
HEAVY = ("torch", "transformers", "matplotlib", "pandas", "numpy", "scipy", "safetensors", "pyarrow", "sklearn")


def _every_command() -> list[str]:
    from attnscope.cli import EXTRA_COMMANDS, SUBCOMMAND_GROUPS

    return [name for *_, name in SUBCOMMAND_GROUPS + EXTRA_COMMANDS]


@pytest.mark.parametrize("args", [["--help"], ["--version"]] + [[c, "--help"] for c in _every_command()])
def test_help_imports_no_heavy_module(args):
    code = ("import sys\nfrom attnscope.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert "HEAVY []" in err, err[-2000:]
    assert r.stdout  # the help or the version was printed


def test_version():
    from importlib.metadata import version

    r = run("--version")
    assert r.returncode == 0 and r.stdout.decode().strip() == f"attnscope {version('attnscope')}"


def test_short_help_is_each_commands_own():
    """`attnscope --help` lists SHORT_HELP without importing the commands: it must say what each command says."""
    import attnscope.cli as cli

    for name in cli._entries():
        assert name in cli.SHORT_HELP, name
        own = " ".join(cli.load_command(name).help.split("\n\n")[0].split())
        assert cli.SHORT_HELP[name] == own, name


def test_commands_run_through_the_lazy_group(tmp_path):
    from typer.testing import CliRunner

    from attnscope.cli import app

    r = CliRunner().invoke(app, ["tasks", "align", "--help"])
    assert r.exit_code == 0 and "--trace" in r.output
    r = CliRunner().invoke(app, ["nosuchcommand"])
    assert r.exit_code == 2 and "No such command" in r.output


# ---------------------------------------------------------------------------- clear errors
def one_line_error(r, *needles):
    """A finished subprocess failed with exit 2 and one line on stderr holding every needle."""
    return _check_one_line(r.returncode, r.stderr.decode(), needles)


def _check_one_line(code, err, needles):
    assert code == 2, (code, err[-3000:])
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err[-3000:]
    for n in needles:
        assert n in err, err
    return err


def cli_error(capsys, *args_and_needles):
    """Run `attnscope ARGS` in this process through attnscope.cli.main (as the console script does)."""
    from attnscope.cli import main

    args, needles = args_and_needles
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return _check_one_line(e.value.code, capsys.readouterr().err, needles)


@pytest.mark.parametrize("cmd", [["analyze", "hi"], ["report", "hi"], ["probe"], ["explain", "hi"],
                                 ["counterfactual", "hi"], ["dropout", "hi"], ["ablate", "-t", "hi"],
                                 ["tasks", "qa", "--model", "minilm", "--question", "q", "--context", "c"]])
def test_out_that_is_a_file_or_under_proc(tmp_path, capsys, cmd):
    f = tmp_path / "existing.txt"
    f.write_text("keep me")
    cli_error(capsys, [*cmd, "--out", f], ["is an existing file"])
    assert f.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt"]
    cli_error(capsys, [*cmd, "--out", "/proc/attnscope-out"], ["under /proc"])


def test_corpus_out_checks(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("a text\n")
    cli_error(capsys, ["corpus", src, "--out", "/proc/x.parquet"], ["under /proc"])
    cli_error(capsys, ["corpus", src, "--out", tmp_path], ["is a directory"])
    blocker = tmp_path / "file"
    blocker.write_text("")
    cli_error(capsys, ["corpus", src, "--out", blocker / "s.parquet"], ["is a file"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in.txt"]  # nothing half-written


def test_check_out_unwritable_parent(tmp_path, monkeypatch):
    from attnscope.commands import check_out
    from attnscope.errors import InputError

    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(InputError, match="not writable"):
        check_out(tmp_path / "new" / "dir")
    assert not (tmp_path / "new").exists()


def test_os_error_at_the_boundary_is_one_line(monkeypatch, capsys):
    import attnscope.commands as commands
    from attnscope.cli import main

    def boom(*a, **k):
        raise PermissionError(13, "Permission denied", "/root/secret.txt")

    monkeypatch.setattr(commands, "read_text", boom)
    with pytest.raises(SystemExit) as e:
        main(["analyze", "x", "--out", "/tmp/attnscope-test-never-written"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == "error: Permission denied: /root/secret.txt (check the path and its permissions)\n"


def test_report_on_a_trace_with_list_metadata(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "list.safetensors"
    save_file({"weights/self": torch.zeros(1, 1, 2, 2)}, str(bad), metadata={"attnscope": "[1, 2, 3]"})
    cli_error(capsys, ["report", "--trace", bad, "--out", tmp_path / "r"], ["not an object"])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("field, value", [("tokens", []), ("meta", [1]), ("layers", "x"), ("texts", None)])
def test_trace_load_refuses_wrongly_typed_metadata(tmp_path, field, value):
    import json

    from conftest_traces import encoder_trace
    from safetensors import safe_open
    from safetensors.torch import save_file

    from attnscope import AttentionTrace
    from attnscope.errors import TraceFormatError

    good = encoder_trace(layers=1, heads=2).save(tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        header, tensors = json.loads(f.metadata()["attnscope"]), {k: f.get_tensor(k) for k in f.keys()}
    AttentionTrace.load(good)  # the untouched file loads
    header[field] = value
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"attnscope": json.dumps(header)})
    with pytest.raises(TraceFormatError, match=f"field {field!r}"):
        AttentionTrace.load(bad)


@pytest.mark.parametrize("model", ["nosuchmodel", "./no/such/dir"])
def test_explain_unknown_model(tmp_path, capsys, model):
    cli_error(capsys, ["explain", "hi", "--model", model, "--out", tmp_path / "e"], [model.strip("./")])
    assert not (tmp_path / "e").exists()


def test_index_ranges_are_bounded_before_expanding():
    from attnscope.commands import MAX_INDEX, parse_indices
    from attnscope.errors import InputError

    assert parse_indices("0,2,5-7", "layer") == [0, 2, 5, 6, 7]
    assert parse_indices("-1", "layer") == [-1]
    with pytest.raises(InputError, match="3000000 is out of range"):
        parse_indices("0-3000000", "layer")
    with pytest.raises(InputError, match="out of range"):
        parse_indices("-99999999999999999999-0", "head")
    with pytest.raises(InputError, match="backwards"):
        parse_indices("5-2", "head")
    with pytest.raises(InputError, match="more than"):
        parse_indices(",".join(["0-4096"] * 2), "layer")
    assert len(parse_indices(f"0-{MAX_INDEX - 1}", "layer")) == MAX_INDEX


def test_layers_range_on_the_command_line(tmp_path):
    one_line_error(run("analyze", "hi", "--layers", "0-3000000", "--out", str(tmp_path / "o")), "out of range")
    assert not (tmp_path / "o").exists()


def test_say_ends_espeak_options(monkeypatch, tmp_path):
    """A word like '-x' or '--help' is text to say: it comes after '--' on espeak-ng's command line."""
    import wave

    import numpy as np

    from attnscope.tasks import whisper_timestamps as wt

    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        path = argv[argv.index("-w") + 1]
        with wave.open(path, "wb") as f:  # a short burst of sound, as espeak-ng would write
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
            f.writeframes((np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes())

    monkeypatch.setattr(wt, "espeak_available", lambda: True)
    monkeypatch.setattr(wt.subprocess, "run", fake_run)
    x, sr, ref = wt.synthesize_words(["-x", "--help"], 0.1)
    assert [c[-2:] for c in calls] == [["--", "-x"], ["--", "--help"]]
    assert [r[0] for r in ref] == ["-x", "--help"] and sr == 16000


def test_seq2seq_compare_writes_under_out(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import attnscope.seq2seq.experiments as ex
    from attnscope.seq2seq.cli import app

    seen = {}
    monkeypatch.setattr(ex, "run_experiments", lambda names, **kw: seen.update(kw, names=names))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["compare", "scores"])
    assert r.exit_code == 0, r.output
    assert seen["doc"] == Path("attnscope-out/seq2seq.md") and seen["img_dir"] == Path("attnscope-out/seq2seq")
    r = CliRunner().invoke(app, ["compare", "scores", "--out", "mine"])
    assert seen["doc"] == Path("mine/seq2seq.md") and seen["img_dir"] == Path("mine/seq2seq")
    assert not (tmp_path / "docs").exists()


# ---------------------------------------------------------------------------- threads and progress
def test_threads_option(tmp_path, capsys):
    import torch

    from attnscope.commands import default_threads, set_threads
    from attnscope.errors import InputError

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert 1 <= default_threads() <= 4
        with pytest.raises(InputError, match="from 1 to"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
    cli_error(capsys, ["analyze", "hi", "--threads", "0", "--out", tmp_path / "o"], ["--threads 0"])


def test_threads_policy_from_the_environment(monkeypatch):
    import torch

    from attnscope.commands import default_threads, set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ATTNSCOPE_THREADS", "1")
        assert set_threads(None) == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("ATTNSCOPE_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        assert set_threads(None) == 2  # the user's OpenMP setting is left alone
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads(None) == default_threads() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_progress_is_quiet_off_a_terminal(capsys):
    from attnscope.progress import progress_bar, status

    with progress_bar("work") as update:
        update(1, 2)
        update(2, 2)
    with status("loading") as say:
        say("step")
    assert capsys.readouterr() == ("", "")


def test_progress_draws_on_a_terminal(monkeypatch, capsys):
    import attnscope.progress as progress

    monkeypatch.setattr(progress, "enabled", lambda quiet=False: not quiet)
    with progress.progress_bar("crunching") as update:
        update(3, 4)
    err = capsys.readouterr().err
    assert "crunching" in err and "3/4" in err
    with progress.progress_bar("crunching", quiet=True) as update:
        update(3, 4)
    assert capsys.readouterr().err == ""


def test_library_progress_callbacks():
    """Long library functions report (done, total) and end at total == done."""
    from attnscope.attribution import dropout_consistency, head_importance, token_interventions
    from attnscope.attribution.testing import tiny_model

    lm = tiny_model("bert")
    for run_it in (lambda cb: head_importance(lm, ["a b", "c d e"], method="ablation", progress=cb),
                   lambda cb: head_importance(lm, ["a b", "c d e"], method="gradient", progress=cb),
                   lambda cb: dropout_consistency(lm, "a b c", n_runs=3, p=0.1, progress=cb),
                   lambda cb: token_interventions(lm, "a b c", progress=cb)):
        calls = []
        run_it(lambda done, total: calls.append((done, total)))
        assert calls and calls[-1][0] == calls[-1][1] > 0
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_gallery_progress(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from conftest_traces import encoder_trace

    import attnscope.render.gallery as gallery

    def fake_save(fig, path, formats):  # the figures are built; writing them is left out to keep this quick
        plt.close(fig)
        return [path]

    monkeypatch.setattr(gallery, "save_figure", fake_save)
    monkeypatch.setattr(gallery, "layer_animation", lambda trace, path, stream: path)
    monkeypatch.setattr(gallery, "write_flow_3d_html", lambda trace, path, stream: path)
    calls = []
    # two heads: the head projection (t-SNE) is left out, which is slow on a busy machine
    written = gallery.save_gallery(encoder_trace(layers=1, heads=2), tmp_path, formats=("png",),
                                   progress=lambda d, t: calls.append((d, t)))
    assert [d for d, _ in calls] == list(range(1, len(written) + 1)) + [len(written)]
    assert calls[-1] == (len(written), len(written)) and all(d <= t for d, t in calls)


# ---------------------------------------------------------------------------- speech input
def write_wav(path, x, rate, channels=1, width=2):
    import wave

    import numpy as np

    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels), f.setsampwidth(width), f.setframerate(rate)
        f.writeframes(np.round(np.asarray(x) * 32767).astype("<i2").tobytes())


def test_read_wav_mono_resampled_and_bounded(tmp_path):
    import numpy as np

    from attnscope.audio import read_wav
    from attnscope.errors import InputError

    t = np.arange(8000) / 8000.0  # 1 s at 8 kHz
    left, right = 0.5 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, right], 1).reshape(-1)  # interleaved frames
    write_wav(tmp_path / "s.wav", stereo, 8000, channels=2)
    x, sr = read_wav(tmp_path / "s.wav")
    q = lambda v: np.round(v * 32767) / 32768  # 16-bit quantisation as written
    assert sr == 8000 and x.dtype == np.float32
    np.testing.assert_allclose(x, (q(left) + q(right)) / 2, atol=1e-6)
    y, sr = read_wav(tmp_path / "s.wav", 16000)
    assert sr == 16000 and y.size == 16000
    # the 220 + 440 Hz mixture keeps its spectrum: the peak stays at 220 Hz
    assert abs(np.argmax(np.abs(np.fft.rfft(y))) * 16000 / y.size - 220) <= 1
    with pytest.raises(InputError, match="at most 0.5 s"):
        read_wav(tmp_path / "s.wav", max_seconds=0.5)
    x, _ = read_wav(tmp_path / "s.wav", max_seconds=0.5, truncate=True)
    assert x.size == 4000
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(InputError, match="not a readable WAV"):
        read_wav(tmp_path / "bad.wav")


def test_audio_input_errors(tmp_path, capsys):
    cli_error(capsys, ["analyze", "--audio", tmp_path / "none.wav", "--out", tmp_path / "o"], ["no such file"])
    write_wav(tmp_path / "a.wav", [0.0, 0.1, 0.0], 16000)
    cli_error(capsys, ["analyze", "hi", "--audio", tmp_path / "a.wav", "--out", tmp_path / "o"], ["not both"])
    cli_error(capsys, ["analyze", "--audio", tmp_path / "a.wav", "--out", tmp_path / "o"], ["minilm takes text"])
    write_wav(tmp_path / "long.wav", [0.0] * (31 * 8000), 8000)
    cli_error(capsys, ["tasks", "whisper-timestamps", "--audio", tmp_path / "long.wav", "--out", tmp_path / "o"],
              ["31.0 s long", "at most 30 s", "--truncate"])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_analyze_speech_model(tmp_path):
    import numpy as np

    r = run("analyze", "hi", "--model", "whisper-tiny-en", "--out", str(tmp_path / "o"))
    one_line_error(r, "speech model", "--audio")
    t = np.arange(22050) / 22050.0
    write_wav(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 22050)
    r = run("analyze", "--audio", str(tmp_path / "tone.wav"), "--model", "whisper-tiny-en", "--target", "hello",
            "--layers", "0", "--out", str(tmp_path / "o"), "--save-trace")
    assert r.returncode == 0, r.stderr.decode()
    from attnscope import AttentionTrace

    tr = AttentionTrace.load(tmp_path / "o" / "trace.safetensors")
    assert set(tr.streams) == {"encoder_self", "decoder_self", "cross"}
    assert abs(tr.meta["audio_seconds"] - 1.0) < 1e-3  # resampled 22.05 kHz -> 16 kHz keeps its length
