"""Training loop, checkpoints, the CLI and the docs writer (tiny runs, seconds)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from attnscope import AttentionTrace
from attnscope.errors import InputError, UnknownNameError
from attnscope.seq2seq.cli import app
from attnscope.seq2seq.experiments import write_section
from attnscope.seq2seq.export import translate
from attnscope.seq2seq.train import TrainConfig, attention_stats, load_checkpoint, save_checkpoint, train


@pytest.fixture(autouse=True)
def _one_thread():  # noqa: ANN202
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _tiny(**kw) -> TrainConfig:  # noqa: ANN003
    base = dict(task="dates", size="tiny", n_train=256, n_dev=32, n_test=32, steps=24, eval_every=8,
                batch_size=32, lr=1e-2, patience=100, target_exact_match=1.01)
    base.update(kw)
    return TrainConfig(**base)


def test_train_checkpoint_round_trip(tmp_path) -> None:  # noqa: ANN001
    res = train(_tiny(attention="luong-general"), progress=False)
    assert res.metrics["steps"] == 24 and len(res.history) == 3
    assert res.history[-1]["loss"] < res.history[0]["loss"] * 1.5  # running mean; the strict check is in test_seq2seq
    assert 0.0 <= res.metrics["test_exact_match"] <= 1.0 and res.metrics["test_bleu"] >= 0.0
    out = save_checkpoint(res, tmp_path / "ckpt")
    text = (out / "config.json").read_text()
    assert json.loads(text)["model"]["attention"] == "luong-general"
    loaded = load_checkpoint(out)
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v)
    output, tr = translate(loaded, "3rd of March 2021", beam=2)
    assert tr.texts["target"] == output and tr.meta["attention"] == "luong-general"
    back = AttentionTrace.load(tr.save(tmp_path / "t.safetensors"))
    assert back.key_tokens("cross").text[:3] == ["3", "r", "d"] and back.key_tokens("cross").text[-1] == "</s>"


def test_checkpoint_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="not a seq2seq checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(UnknownNameError, match="dates"):
        TrainConfig(task="poems")


def test_attention_stats_per_step() -> None:
    w = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]])  # (H, T, S)
    st = attention_stats(w)
    torch.testing.assert_close(st["entropy"][0, 0], torch.tensor([0.0, 0.6931472]))
    torch.testing.assert_close(st["max"][0, 0], torch.tensor([1.0, 0.5]))
    assert st["effective_positions"][0, 0].tolist() == [1.0, 2.0]


def test_cli_train_and_translate(tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    tsv = tmp_path / "p.tsv"
    tsv.write_text("".join(f"a{i} b\tb a{i}\n" for i in range(40)), encoding="utf-8")
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--tsv", str(tsv), "--attention", "bahdanau", "--size", "tiny", "--steps", "6",
                            "--eval-every", "3", "--out", str(out), "--examples", "1", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert (out / "model.safetensors").is_file() and (out / "alignments" / "example_0.png").is_file()
    assert (out / "traces" / "example_0.safetensors").is_file()
    stats = json.loads((out / "attention_stats.json").read_text())
    assert len(stats[0]["entropy"]) == len(stats[0]["target_tokens"])
    r = runner.invoke(app, ["translate", "a1 b", "--checkpoint", str(out), "--png", str(tmp_path / "a.png")])
    assert r.exit_code == 0, r.output
    assert "attends to" in r.output and (tmp_path / "a.png").is_file()


def test_write_section_replaces_only_its_block(tmp_path) -> None:  # noqa: ANN001
    doc = tmp_path / "d.md"
    doc.write_text("# T\n\nintro\n\n<!-- BEGIN compare:scores -->\nold\n<!-- END compare:scores -->\n\nafter\n")
    write_section(doc, "scores", "| a |\n", "attnscope seq2seq compare scores")
    text = doc.read_text()
    assert "old" not in text and "| a |" in text and text.startswith("# T\n\nintro") and text.rstrip().endswith("after")
    write_section(doc, "heads", "H", "cmd")
    assert "<!-- BEGIN compare:heads -->" in doc.read_text()
