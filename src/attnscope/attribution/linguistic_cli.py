"""`attnscope linguistic-heads`: syntactic and coreference heads of a model (registered as a plain command in
attnscope/cli.py; the method is :mod:`attnscope.attribution.linguistic_heads`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..commands import (DeviceOption, DtypeOption, QuietOption, ThreadsOption, check_out, set_placement,
                        set_threads)
from ..errors import InputError
from ..progress import progress_bar, status

console = Console()


def linguistic_heads(
    model: str = typer.Option("minilm", "--model", "-m", help="Catalogue name (minilm, smollm2), local directory "
                                                              "or hub id."),
    sentences: int = typer.Option(300, help="BBC sentences to parse with spaCy (ignored with --conllu)."),
    conllu: Optional[Path] = typer.Option(None, help="Parses from any parser, as a CoNLL-U file (instead of spaCy)."),
    min_count: int = typer.Option(20, help="Report relations with at least this many arcs."),
    syntax: bool = typer.Option(True, "--syntax/--no-syntax", help="Score syntactic heads (needs parses)."),
    coreference: bool = typer.Option(True, "--coreference/--no-coreference", help="Score coreference heads on the "
                                                                                 "built-in template set."),
    out: Path = typer.Option(Path("attnscope-linguistic"), "--out", "-o", help="Output directory."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Linguistic head roles: per dependency relation the best head vs a fixed-offset baseline, and coreference heads."""
    check_out(out)
    if not syntax and not coreference:
        raise InputError("nothing to do: drop --no-syntax or --no-coreference")
    if conllu is not None and not conllu.is_file():
        raise InputError(f"--conllu {conllu}: no such file")
    if not 1 <= min_count <= 100000:
        raise InputError(f"--min-count must be in 1..100000, got {min_count}")
    set_threads(threads)
    set_placement(device, dtype)
    from ..analysis.syntactic_heads import read_conllu, to_conllu
    from ..models import load_model
    from ..render.linguistic import plot_linguistic_heads
    from .linguistic_heads import DEFAULT_PIPELINE, bbc_sentences, coreference_roles, summary, syntactic_roles

    parsed, parser = None, "given"
    if syntax:
        if conllu is not None:
            parsed, parser = read_conllu(conllu.read_text(encoding="utf-8")), f"CoNLL-U file {conllu.name}"
        else:
            with status(f"parsing {sentences} BBC sentences with spaCy", quiet=quiet):
                parsed, parser = bbc_sentences(sentences), f"spaCy {DEFAULT_PIPELINE} (parser output, not gold)"
        if not parsed:
            raise InputError("no sentences to score: the CoNLL-U file is empty")
    with status(f"loading {model}", quiet=quiet):
        lm = load_model(model)
    out.mkdir(parents=True, exist_ok=True)
    syn = cor = None
    if parsed:
        with progress_bar("sentences", quiet=quiet) as update:
            syn = syntactic_roles(lm, parsed, min_count=min_count, parser=parser, progress=update)
        (out / "syntactic_heads.json").write_text(json.dumps(syn.to_dict()))
        (out / "sentences.conllu").write_text(to_conllu(parsed), encoding="utf-8")
        table = Table("relation", "direction", "arcs", "best head", "accuracy", "baseline (offset)")
        for r in syn.rows:
            table.add_row(escape(r["relation"]), r["direction"], str(r["count"]), f"L{r['layer']}H{r['head']}",
                          f"{r['accuracy']:.3f}", f"{r['baseline']:.3f} ({r['baseline_offset']:+d})")
        console.print(table)
    if coreference:
        with status("coreference template set", quiet=quiet):
            cor = coreference_roles(lm)
        (out / "coreference_heads.json").write_text(json.dumps(cor.to_dict()))
        for fam, b in cor.best_by_family().items():
            console.print(f"coreference ({fam}): best head L{b['layer']}H{b['head']} accuracy {b['accuracy']:.3f}; "
                          f"nearest-noun baseline {cor.baselines['nearest_noun']:.3f}", highlight=False)
    (out / "linguistic_roles.json").write_text(json.dumps(summary(syn, cor)))
    png = plot_linguistic_heads(syn, cor, out / "linguistic_heads.png", title=f"{lm.name}: linguistic heads")
    console.print(f"wrote {png}, {out / 'linguistic_roles.json'}", highlight=False)
