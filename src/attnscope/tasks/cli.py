"""`attnscope tasks …`: sentiment, QA, cross-attention alignment, Whisper word timestamps, generation
monitor, dialogue. Every command writes PNG figures and a JSON summary into ``--out``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..commands import (DeviceOption, DtypeOption, QuietOption, ThreadsOption, check_out, set_placement,
                        set_threads)

app = typer.Typer(help="Task analyses on real models: sentiment, QA, alignment, generation, dialogue.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
sentiment_app = typer.Typer(help="Fine-tune MiniLM on the packaged tweets and analyse its attention.",
                            no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(sentiment_app, name="sentiment")


def _console():
    from rich.console import Console

    return Console()


def _write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=float))
    return path


def _ints(values: Optional[str]) -> Optional[list[int]]:
    from ..errors import InputError

    if values is None or not values.strip():
        return None
    try:
        return [int(v) for v in values.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {values!r}") from None


def _pairs(values: Optional[str]) -> Optional[list[tuple[int, int]]]:
    """'1:0,2:5' -> [(1, 0), (2, 5)]."""
    from ..errors import InputError

    if not values:
        return None
    out = []
    for part in values.split(","):
        try:
            l, h = part.split(":")
            out.append((int(l), int(h)))
        except ValueError:
            raise InputError(f"heads are given as layer:head pairs, e.g. 1:0,2:5 — got {part!r}") from None
    return out


# ---------------------------------------------------------------------------- sentiment
@sentiment_app.command("train")
def sentiment_train(
    n_train: Optional[int] = typer.Option(None, help="distinct training tweets, split by tweet id \\[default: 2000]"),
    n_test: Optional[int] = typer.Option(None, help="distinct held-out tweets \\[default: 500]"),
    epochs: Optional[float] = typer.Option(None, help="passes over the training tweets \\[default: 1]"),
    max_length: Optional[int] = typer.Option(None, help="tokens per tweet while training (longer ones are truncated; "
                                             "counted) \\[default: 64]"),
    batch_size: Optional[int] = typer.Option(None, help="\\[default: 16]"),
    lr: Optional[float] = typer.Option(None, help="learning rate of the encoder \\[default: 1e-4]"),
    head_lr: Optional[float] = typer.Option(None, help="learning rate of the new classification head "
                                            "\\[default: 1e-3]"),
    row: Optional[str] = typer.Option(None, help="row of each tweet id: 'first' (the original tweet) or 'random' "
                                      "(one of its paraphrases) \\[default: first]"),
    seed: Optional[int] = typer.Option(None, help="\\[default: 0]"),
    max_steps: Optional[int] = typer.Option(None, help="stop after this many optimiser steps"),
    out: Optional[Path] = typer.Option(None, help="model directory (default: the attnscope cache)"),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    reuse: bool = typer.Option(False, help="skip training when the model in --out was trained with exactly these "
                               "settings by the current recipe"),
) -> None:
    """Fine-tune MiniLM + a classification head on the tweets; save (safetensors) and report held-out accuracy."""
    from rich.progress import Progress

    if out is not None:
        check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from .sentiment import TrainConfig, stale_reason, train_sentiment

    given = dict(n_train=n_train, n_test=n_test, epochs=epochs, max_length=max_length, batch_size=batch_size, lr=lr,
                 head_lr=head_lr, row=row, seed=seed, max_steps=max_steps)
    cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})  # unset flags: TrainConfig's defaults
    cfg.validate()
    console = _console()
    if reuse and stale_reason(out, cfg) is None:
        console.print(f"the model in {out or 'the cache'} was trained with these settings (key {cfg.key()}); "
                      "not retraining")
        return
    with Progress(console=console) as bar:
        task = bar.add_task("fine-tuning", total=None)

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, description=f"fine-tuning (loss {loss:.3f})")

        report = train_sentiment(cfg, out, progress=progress)
    console.print(f"held-out accuracy [bold]{report.accuracy:.3f}[/] on {report.n_test} tweets "
                  f"(trained on {report.n_train}, {report.steps} steps, {report.seconds:.0f} s; "
                  f"{report.truncated_train} training tweets truncated to {cfg.max_length} tokens)")
    console.print("per class: " + ", ".join(f"{k} {v:.2f}" for k, v in report.per_class_accuracy.items()))
    console.print(f"saved to {report.path}")


@sentiment_app.command("analyze")
def sentiment_analyze(
    model: Optional[Path] = typer.Option(None, help="classifier directory (default: the cached fine-tuned one)"),
    n: int = typer.Option(200, help="held-out tweets to analyse"),
    text: Optional[List[str]] = typer.Option(None, help="texts to explain (rollout vs integrated gradients)"),
    bins: int = typer.Option(10, help="relative-position bins of the class-averaged patterns"),
    layers: Optional[str] = typer.Option("-1", help="layers for the class patterns, e.g. '-1' or '0,5'"),
    seed: int = typer.Option(1),
    out: Path = typer.Option(Path("tasks-out/sentiment"), help="output directory"),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Class-averaged attention, most-attended words, rollout vs IG, misclassified held-out tweets."""
    from ..progress import status

    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from .sentiment import analyze_sentiment, load_sentiment_model, sample_tweets

    with status("loading the sentiment model", quiet=quiet):
        lm = load_sentiment_model(model)
    items = sample_tweets("test", n, seed)
    with status(f"analysing {len(items)} held-out tweets", quiet=quiet):
        res = analyze_sentiment(lm, items, out_dir=out, bins=bins, layers=_ints(layers) or [-1], explain=text)
    console = _console()
    console.print(f"accuracy on these {res.n} held-out tweets: [bold]{res.accuracy:.3f}[/]")
    for g, words in res.tokens.by_group.items():
        console.print(f"{g}: " + ", ".join(f"{w} ({s:.2f})" for w, s, _ in words[:8]))
    for e in res.explanations:
        console.print(f"rollout vs IG Spearman {e.spearman:+.2f}: {e.text[:70]!r} -> {e.predicted}")
    console.print(f"figures and summary in {out}")


# ---------------------------------------------------------------------------- QA
@app.command("qa")
def qa_command(
    model: str = typer.Option(..., help="an extractive QA model: hub id or local directory"),
    question: str = typer.Option(..., help="the question"),
    context: Optional[str] = typer.Option(None, help="the context passage"),
    context_file: Optional[Path] = typer.Option(None, help="read the context from a UTF-8 file"),
    layers: Optional[str] = typer.Option(None, help="layers for the question→context map (default: last)"),
    out: Path = typer.Option(Path("tasks-out/qa")),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    allow_random_head: bool = typer.Option(False, "--allow-random-head", help="run even when the model's QA head "
                                           "is randomly initialised (its answers are then arbitrary)"),
) -> None:
    """Predicted answer span, question→context attention, attention to the answer per layer, answer heads."""
    from ..errors import InputError
    from ..progress import status
    from . import plots
    from .qa import answer_question

    if context_file is not None:
        context = context_file.read_text(encoding="utf-8")
    if context is None:
        raise InputError("give --context or --context-file")
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    with status(f"answering with {model}", quiet=quiet):
        r = answer_question(model, question, context, allow_random_head=allow_random_head)
    r.question_to_context(_ints(layers))
    fig = plots.plot_qa(r, out / "qa.png")
    _write_json(out / "qa_summary.json", r.summary())
    console = _console()
    for w in r.warnings:
        from rich.markup import escape

        console.print(f"[bold red]WARNING:[/] [red]{escape(w)}[/]")
    console.print(f"answer: [bold]{r.answer!r}[/] (p={r.score:.3f}, tokens {r.span[0]}..{r.span[1]})")
    for row in r.top_answer_heads(5):
        console.print(f"  head L{row['layer']}H{row['head']}: question→answer mass {row['question_to_answer']:.3f} "
                      f"({row['lift']:.1f}× uniform), argmax in answer {row['argmax_in_answer']:.0%}")
    console.print(f"figure: {fig}")


# ---------------------------------------------------------------------------- alignment
@app.command("align")
def align_command(
    source: Optional[str] = typer.Option(None, help="source sentence (with --model)"),
    model: Optional[str] = typer.Option(None, help="encoder-decoder (Marian, T5, BART…): hub id or local dir"),
    target: Optional[str] = typer.Option(None, help="target to teacher-force (default: the model's translation)"),
    trace: Optional[Path] = typer.Option(None, help="instead of a model: a saved trace with a 'cross' stream "
                                                    "(e.g. from `attnscope seq2seq translate`)"),
    layers: Optional[str] = typer.Option(None, help="layers to average, e.g. '4,5'"),
    heads: Optional[str] = typer.Option(None, help="heads to average, e.g. '0,3'"),
    reference: Optional[str] = typer.Option(None, help="reference links 't-s' (target-source, 0-based), e.g. '0-0,1-2'"),
    out: Path = typer.Option(Path("tasks-out/align")),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Source × target alignment from cross-attention, and which heads align best."""
    from ..errors import InputError
    from ..progress import status
    from ..trace import AttentionTrace
    from . import plots
    from .alignment import align, best_heads, cross_alignment, score_heads

    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    if trace is not None:
        tr = AttentionTrace.load(trace)
        al = cross_alignment(tr, _ints(layers), _ints(heads))
    elif model and source:
        with status(f"aligning with {model}", quiet=quiet):
            tr, al = align(model, source, target, layers=_ints(layers), heads=_ints(heads))
    else:
        raise InputError("give --model and --source, or --trace")
    ref = None
    if reference:
        try:
            ref = [tuple(int(x) for x in p.split("-")) for p in reference.split(",")]
        except ValueError:
            raise InputError("reference links look like '0-0,1-2' (target-source)") from None
    hs = score_heads(tr, reference=ref)
    metric = "aer" if ref else "diagonality"
    best = best_heads(hs, metric, k=5)
    plots.plot_alignment(al, out / "alignment.png")
    plots.plot_head_scores(hs, out / "alignment_heads.png", metric, f"cross-attention heads by {metric}", mark=best)
    _write_json(out / "alignment.json", {"alignment": al.to_dict(), "heads": hs.rows(), "best_heads": best,
                                         "metric": metric})
    console = _console()
    console.print(" ".join(f"{al.target_labels[t]}→{al.source_labels[s]}" for t, s in al.hard()))
    console.print(f"best heads by {metric}: " + ", ".join(f"L{l}H{h}" for l, h in best))
    console.print(f"figures in {out}")


@app.command("whisper-timestamps")
def whisper_timestamps_command(
    audio: Optional[Path] = typer.Option(None, help="a PCM WAV file (any rate, mono or stereo, at most 30 s)"),
    truncate: bool = typer.Option(False, "--truncate", help="keep the first 30 s of a longer --audio file"),
    say: Optional[str] = typer.Option(None, help="instead: synthesise these words with espeak-ng (known boundaries)"),
    gap: float = typer.Option(0.3, help="silence between synthesised words (s)"),
    model: str = typer.Option("whisper-tiny-en", help="a Whisper model"),
    heads: Optional[str] = typer.Option(None, help="alignment heads as layer:head pairs (default: the model's)"),
    find_heads: bool = typer.Option(False, help="with --say: score every head against the known boundaries"),
    out: Path = typer.Option(Path("tasks-out/whisper")),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Word timestamps from Whisper's cross-attention (DTW over alignment heads)."""
    from ..errors import InputError
    from ..models import load_model
    from . import plots
    from .alignment import best_heads
    from ..audio import read_wav
    from ..progress import status
    from .whisper_timestamps import (SAMPLE_RATE, alignment_heads, compare_boundaries, find_alignment_heads,
                                     synthesize_words, word_timestamps)

    ref = None
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    if say:
        x, sr, ref = synthesize_words(say.split(), gap)
    elif audio is not None:
        x, sr = read_wav(audio, SAMPLE_RATE, truncate=truncate)
    else:
        raise InputError("give --audio FILE.wav or --say 'some words'")
    with status(f"loading {model}", quiet=quiet) as say_status:
        lm = load_model(model, progress=say_status)
    with status("transcribing and aligning", quiet=quiet):
        res = word_timestamps(lm, x, sr, heads=_pairs(heads))
    console = _console()
    console.print(f"transcript: {res.text!r}")
    for w in res.words:
        console.print(f"  {w.start:6.2f} – {w.end:6.2f}  {w.word}")
    summary = res.to_dict()
    if ref is not None:
        cmp = compare_boundaries(res.words, ref)
        summary["reference"] = [list(r) for r in ref]
        summary["errors"] = cmp
        console.print(f"matched {cmp['matched']}/{cmp['of']} words; start MAE {cmp['start_mae']:.3f} s, "
                      f"end MAE {cmp['end_mae']:.3f} s, boundary error (to the silent gap) {cmp['boundary_mae']:.3f} s")
        if find_heads:
            with status("scoring every head", quiet=quiet):
                hs, _ = find_alignment_heads(lm, x, ref, sr)
            best = best_heads(hs, "reference_mass", k=8)
            plots.plot_head_scores(hs, out / "whisper_heads.png", "reference_mass",
                                   "mass on the true word frames (cyan: the model's alignment heads)",
                                   mark=alignment_heads(lm))
            summary["best_heads_by_reference_mass"] = best
            console.print("heads by mass on the true word frames: " + ", ".join(f"L{l}H{h}" for l, h in best))
    plots.plot_word_timestamps(x, sr, res.words, ref, out / "whisper_words.png")
    plots.plot_alignment(res.alignment, out / "whisper_alignment.png", words=res.words)
    _write_json(out / "whisper_timestamps.json", summary)
    console.print(f"figures in {out}")


# ---------------------------------------------------------------------------- generation monitor
@app.command("generation-monitor")
def generation_monitor_command(
    prompt: str = typer.Option(..., help="the prompt"),
    model: str = typer.Option("smollm2", help="a causal LM"),
    max_new_tokens: int = typer.Option(32),
    sample: bool = typer.Option(False, help="sample instead of greedy decoding"),
    temperature: float = typer.Option(1.0),
    top_p: float = typer.Option(1.0),
    seed: int = typer.Option(0),
    chat: bool = typer.Option(True, help="apply the chat template"),
    threshold: float = typer.Option(0.3, help="flag tokens whose probability is below this"),
    out: Path = typer.Option(Path("tasks-out/generation")),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Per generated token: attention entropy per layer, max weight, prompt/generated/sink mass, confidence."""
    from ..progress import status

    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from . import plots
    from .generation_monitor import monitor_generation

    with status(f"generating up to {max_new_tokens} tokens with {model}", quiet=quiet):
        m = monitor_generation(model, prompt, max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature,
                               top_p=top_p, seed=seed, chat=chat, threshold=threshold)
    plots.plot_generation(m, out / "generation_monitor.png")
    _write_json(out / "generation_monitor.json", {**m.summary(), "steps": m.rows()})
    console = _console()
    console.print(f"generated: [bold]{m.text!r}[/]")
    console.print(f"mean confidence {m.confidence.mean():.3f}; first-token (sink) mass {m.sink_mass.mean():.2f}; "
                  f"prompt mass {m.prompt_mass.mean():.2f}")
    for f in m.flagged():
        console.print(f"  low confidence at step {f['step']}: {f['token']!r} p={f['confidence']:.3f}")
    console.print(f"figure: {out / 'generation_monitor.png'}")


# ---------------------------------------------------------------------------- dialogue
@app.command("dialogue")
def dialogue_command(
    messages: Optional[Path] = typer.Option(None, help="a JSON file: [{\"role\": …, \"content\": …}, …]"),
    turn: Optional[List[str]] = typer.Option(None, help="turns in order, alternating user/assistant (repeatable)"),
    model: str = typer.Option("smollm2", help="a chat model with a chat template"),
    keep_sink: bool = typer.Option(False, help="keep the first token's (sink) mass in the matrices"),
    out: Path = typer.Option(Path("tasks-out/dialogue")),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Utterance × utterance attention per layer: which earlier turns each turn reads."""
    from ..errors import InputError
    from ..progress import status

    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from . import plots
    from .dialogue import dialogue_attention

    if messages is not None:
        try:
            msgs = json.loads(messages.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{messages} is not valid JSON: {e}") from None
    elif turn:
        msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turn)]
    else:
        raise InputError("give --messages FILE.json or --turn … --turn …")
    with status(f"reading the dialogue with {model}", quiet=quiet):
        d = dialogue_attention(model, msgs, exclude_sink=not keep_sink)
    plots.plot_dialogue(d, out / "dialogue.png")
    plots.plot_dialogue_flow(d, out / "dialogue_flow.png")
    _write_json(out / "dialogue.json", d.summary())
    console = _console()
    coh = d.coherence()
    import numpy as np

    for i in range(1, len(d.turns)):
        reads = ", ".join(f"{j}:{d.turns[j].role} {s:.0%}" for j, s in d.reads(i)[:3])
        console.print(f"turn {i} ({d.turns[i].role}) reads {reads}; coherence lift {np.nanmean(coh.lift[:, i]):.2f}")
    console.print(f"coherence score (mean lift over turns and layers): {coh.overall:.2f}")
    console.print(f"figures: {out / 'dialogue.png'}, {out / 'dialogue_flow.png'}")
