"""`attnscope seq2seq …`: train, translate with the alignment, and run the comparison experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Train Bahdanau/Luong attention seq2seq models and watch their alignments.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def train(
    task: str = typer.Option("dates", help="generated task: dates | svo-sov (ignored with --tsv)"),
    attention: str = typer.Option("bahdanau", help="bahdanau | luong-dot | luong-general | luong-concat | multihead"),
    heads: int = typer.Option(1, help="heads of the multihead attention"),
    epochs: int = typer.Option(30, help="maximum passes over the training data"),
    steps: int = typer.Option(0, help="maximum optimizer steps (0 = no cap)"),
    out: Optional[Path] = typer.Option(None, help="checkpoint directory (default runs/seq2seq-<task>-<attention>)"),
    seed: int = typer.Option(0),
    tsv: Optional[Path] = typer.Option(None, help="train on a 'source<TAB>target' file instead of a generated task"),
    tokenizer: str = typer.Option("word", help="tokenizer for --tsv data: word | char"),
    size: str = typer.Option("small", help="model preset: tiny | small"),
    hidden: Optional[int] = typer.Option(None, help="override the preset's hidden size"),
    attn_dropout: float = typer.Option(0.0, help="dropout on attention weights"),
    n_train: int = typer.Option(10_000, help="generated training pairs"),
    n_test: int = typer.Option(1_000, help="generated held-out pairs"),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(2e-3),
    clip: float = typer.Option(1.0, help="gradient-norm clipping"),
    eval_every: int = typer.Option(250, help="steps between dev evaluations (early stopping)"),
    patience: int = typer.Option(4, help="stop after this many evaluations without dev improvement"),
    target_exact_match: float = typer.Option(1.0, help="stop once dev exact match reaches this"),
    examples: int = typer.Option(4, help="held-out examples to draw alignment maps for"),
    threads: int = typer.Option(1, help="torch CPU threads (small GRUs are fastest on 1)"),
) -> None:
    """Train a GRU encoder-decoder with attention; writes a checkpoint, metrics and alignment maps."""
    from rich.console import Console
    from rich.table import Table

    from .artifacts import write_run_artifacts
    from .train import TrainConfig, save_checkpoint
    from .train import train as run_train

    console = Console()
    cfg = TrainConfig(task=task, tsv=str(tsv) if tsv else None, attention=attention, heads=heads, size=size,
                      hidden=hidden, attn_dropout=attn_dropout, n_train=n_train, n_test=n_test, epochs=epochs,
                      steps=steps, batch_size=batch_size, lr=lr, clip=clip, eval_every=eval_every,
                      patience=patience, target_exact_match=target_exact_match, seed=seed, threads=threads,
                      task_options={"tokenizer": tokenizer} if tsv else {})
    out = out or Path("runs") / f"seq2seq-{'tsv' if tsv else task}-{attention}"
    result = run_train(cfg, progress=True, log=console.print)
    save_checkpoint(result, out)
    arts = write_run_artifacts(result, out, examples)
    m = result.metrics
    table = Table(title=f"held-out ({m['test_n']} pairs)")
    for col in ("exact match", "BLEU", "entropy", "max weight", "eff. positions", "steps", "seconds", "peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_row(f"{m['test_exact_match']:.3f}", f"{m['test_bleu']:.1f}", f"{m['test_entropy']:.3f}",
                  f"{m['test_max_weight']:.3f}", f"{m['test_effective_positions']:.2f}", str(m["steps"]),
                  f"{m['train_seconds']:.0f}", f"{m['peak_rss_mb']:.0f}")
    console.print(table)
    for ex in arts["examples"]:
        console.print(f"{ex['source']!r} -> {ex['output']!r} {'✓' if ex['correct'] else '✗ ' + ex['reference']}  {ex['alignment_png']}")
    console.print(f"checkpoint: {out}")


@app.command()
def translate(
    text: str = typer.Argument(..., help="source text"),
    checkpoint: Path = typer.Option(..., help="directory written by `attnscope seq2seq train`"),
    beam: int = typer.Option(1, help="beam size (1 = greedy)"),
    png: Optional[Path] = typer.Option(None, help="write the alignment heatmap here"),
    trace: Optional[Path] = typer.Option(None, help="save the AttentionTrace (.safetensors) here"),
) -> None:
    """Translate TEXT and show which source token each output token attended to."""
    from rich.console import Console
    from rich.table import Table

    from .export import translate as run_translate
    from .plots import plot_alignment
    from .train import load_checkpoint

    console = Console()
    loaded = load_checkpoint(checkpoint)
    output, tr = run_translate(loaded, text, beam=beam)
    console.print(f"[bold]{output}[/bold]")
    w = tr.weights("cross")[0]  # (H, T, S)
    src, tgt = tr.key_tokens("cross").labels(), tr.query_tokens("cross").labels()
    stats = tr.row_stats("cross")
    table = Table(title="alignment (head 0)")
    for col in ("output", "attends to", "weight", "entropy", "eff. positions"):
        table.add_column(col)
    for t, tok in enumerate(tgt):
        j = int(w[0, t].argmax())
        table.add_row(tok, src[j], f"{float(w[0, t, j]):.2f}", f"{float(stats['entropy'][0, 0, t]):.2f}",
                      str(int(stats["effective_positions"][0, 0, t])))
    console.print(table)
    if png:
        console.print(f"alignment map: {plot_alignment(w[0], src, tgt, png, title=f'{text!r} -> {output!r}')}")
    if trace:
        console.print(f"trace: {tr.save(trace)}")


@app.command()
def compare(
    experiments: list[str] = typer.Argument(None, help="scores | lengths | dropout | heads | classifier | all"),
    out: Path = typer.Option(Path("attnscope-out"), "--out", "-o", help="output folder: OUT/seq2seq.md (tables) "
                             "and OUT/seq2seq/ (plots, saved runs); the project's own docs use --out docs"),
    doc: Optional[Path] = typer.Option(None, help="markdown file whose result sections are replaced "
                                       "\\[default: OUT/seq2seq.md]"),
    img_dir: Optional[Path] = typer.Option(None, help="where the plots go \\[default: OUT/seq2seq]"),
    steps: int = typer.Option(1500, help="optimizer steps per seq2seq run (the budget)"),
    classifier_seconds: float = typer.Option(120.0, help="training budget per classifier run, CPU seconds"),
    seed: int = typer.Option(0),
    rerun: bool = typer.Option(False, help="train again even where a saved result of the same run exists"),
) -> None:
    """Run comparison experiments (each run in a fresh process) and write tables + plots into DOC."""
    from ..commands import check_out

    check_out(out)
    doc = doc if doc is not None else out / "seq2seq.md"
    img_dir = img_dir if img_dir is not None else out / "seq2seq"
    check_out(doc, option="--doc", kind="file")
    check_out(img_dir, option="--img-dir")
    from .experiments import EXPERIMENTS, run_experiments

    names = list(experiments or ["all"])
    if names == ["all"]:
        names = list(EXPERIMENTS)
    run_experiments(names, doc=doc, img_dir=img_dir, steps=steps, classifier_seconds=classifier_seconds, seed=seed,
                    log=lambda m: print(m, flush=True), rerun=rerun)
    print(f"tables: {doc}\nplots:  {img_dir}", flush=True)
