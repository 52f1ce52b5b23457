"""`attnscope robustness`: attention divergence under noise on the input embeddings or the attention probabilities
(registered as a plain command in attnscope/cli.py; the method is :mod:`attnscope.attribution.robustness`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..commands import (DeviceOption, DtypeOption, QuietOption, ThreadsOption, check_out, set_placement,
                        set_threads)
from ..errors import InputError
from ..progress import progress_bar, status

console = Console()


def parse_scales(spec: str) -> list[float]:
    """'0,0.05,0.1' -> [0.0, 0.05, 0.1] (one-line error otherwise; the range is checked by the method)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--scales takes comma-separated numbers, e.g. 0,0.05,0.1,0.2; got {spec[:60]!r}") from None


def robustness(
    text: str = typer.Argument(..., help="The input text."),
    scales: str = typer.Option("0,0.05,0.1,0.2,0.5,1", help="Comma-separated noise scales σ (0 = the clean run)."),
    seeds: int = typer.Option(10, help="Noise draws per scale (seeds --seed, --seed+1, …)."),
    kind: str = typer.Option("gaussian", help="gaussian (additive) or multiplicative noise."),
    target: str = typer.Option("embeddings", help="embeddings (the input embeddings) or attention (the "
                                                  "probabilities of every head, through an intervention)."),
    model: str = typer.Option("minilm", "--model", "-m", help="Catalogue name (minilm, smollm2), local directory "
                                                              "or hub id."),
    out: Path = typer.Option(Path("attnscope-robustness"), "--out", "-o", help="Output directory."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    seed: int = typer.Option(0, help="First seed."),
) -> None:
    """Perturbation robustness: per-head KL/JS divergence of attention from the clean run under noise, over seeds."""
    check_out(out)
    scale_list = parse_scales(scales)
    set_threads(threads)
    set_placement(device, dtype)
    from ..models import load_model
    from ..render.robustness import plot_robustness
    from .robustness import _check, perturbation_robustness as run

    _check(scale_list, seeds, kind, target)  # refuse bad options before loading the model
    with status(f"loading {model}", quiet=quiet):
        lm = load_model(model)
    with progress_bar("noisy runs", quiet=quiet) as update:
        r = run(lm, text, scales=scale_list, n_seeds=seeds, kind=kind, target=target, seed=seed, progress=update)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_robustness(r, out / "robustness.png")
    (out / "robustness.json").write_text(json.dumps(r.to_dict(), indent=1))
    metric = r.prediction_metric
    table = Table("σ", "JS mean (nats)", "KL mean (nats)", f"prediction {metric}")
    for i, s in enumerate(r.scales):
        table.add_row(f"{s:g}", f"{r.js_mean[i].mean():.4g}", f"{r.kl_mean[i].mean():.4g}",
                      f"{r.prediction[metric][i, 0]:.4g} ± {r.prediction[metric][i, 1]:.2g}")
    console.print(table)
    li, hi = divmod(int(r.score.argmin()), r.score.shape[1])
    console.print(f"robustness score {r.model_score:.4f} (1 = unchanged); least robust head: layer {r.layers[li]} "
                  f"head {r.heads[hi]} ({r.score[li, hi]:.4f})", highlight=False)
    console.print(f"wrote {png}, {out / 'robustness.json'}", highlight=False)
