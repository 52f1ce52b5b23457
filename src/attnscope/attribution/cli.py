"""CLI commands of attnscope.attribution: `attnscope explain`, `attnscope ablate`, `attnscope probe`,
`attnscope counterfactual`, `attnscope dropout` (registered as plain commands in attnscope/cli.py)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..commands import (DeviceOption, DtypeOption, QuietOption, ThreadsOption, check_out, set_placement,
                        set_threads)
from ..errors import InputError
from ..progress import progress_bar, status

console = Console()

MODEL_HELP = "Catalogue name (minilm, smollm2), local directory or hub id."
TASK_HELP = ("classify: sequence-classification head (a *random* head when the checkpoint has none, e.g. "
             "minilm — seeded by --seed); lm: language-model head; auto: classify for encoders, lm for decoders.")


def load_for_task(model: str, task: str = "auto", seed: int = 0, note: bool = True):
    """Load ``model`` with the head the task needs (classification head for encoders by default); with
    ``note``, say in yellow when that head is randomly initialised."""
    import torch
    import transformers as tf

    from ..models import CATALOGUE, load_model, resolve_model_name

    if task not in ("auto", "classify", "lm"):
        raise InputError(f"--task must be auto, classify or lm, got {task!r}")
    entry = CATALOGUE.get(model)
    if task == "auto":
        task = "lm" if entry is not None and entry.kind == "causal" else "classify"
        if entry is None:
            path, local_only = resolve_model_name(model)
            cfg = tf.AutoConfig.from_pretrained(path, local_files_only=local_only)
            arch = (getattr(cfg, "architectures", None) or [""])[0]
            task = "lm" if arch.endswith("ForCausalLM") or "LMHead" in arch else "classify"
    torch.manual_seed(seed)
    cls = tf.AutoModelForSequenceClassification if task == "classify" else tf.AutoModelForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model(model, model_class=cls)
    if note and lm.has_random_head:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(lm.random_weights_note())}")
    return lm


def _texts(texts: list[str] | None, file: Path | None) -> list[str]:
    out = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise InputError(f"--file {file}: no such file")
        out += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not out:
        raise InputError("give texts with --text (repeatable) or --file (one per line)")
    return out


def _heads(spec: list[str] | None) -> list[tuple[int, int]]:
    out = []
    for s in spec or []:
        try:
            layer, head = s.split(":")
            out.append((int(layer), int(head)))
        except ValueError:
            raise InputError(f"--zero {s!r}: write heads as LAYER:HEAD, e.g. 5:3") from None
    return out


def explain(
    text: str = typer.Argument(..., help="The input text."),
    model: str = typer.Option("minilm", "--model", "-m", help=MODEL_HELP),
    task: str = typer.Option("auto", help=TASK_HELP),
    methods: str = typer.Option("all", help="Comma-separated: attention, rollout, attn_x_grad, chefer, "
                                "integrated_gradients, occlusion, lime, shapley, value_norm, attn_res_ln, globenc, "
                                "alti, alti_logit, value_zeroing, attnlrp (or 'all': those defined for the model)."),
    target: Optional[str] = typer.Option(None, help="Target class index/label or (LM) token; default: the prediction."),
    ig_steps: int = typer.Option(32, help="Integrated-gradients steps."),
    samples: int = typer.Option(32, help="LIME samples (Shapley uses samples/8 permutations)."),
    top_k: int = typer.Option(3, "--top-k", help="k of the top-k overlap."),
    faithful: bool = typer.Option(True, "--faithfulness/--no-faithfulness", help="Deletion/insertion curves + AOPC."),
    out: Path = typer.Option(Path("attnscope-explain"), "--out", "-o", help="Output directory (PNG + JSON)."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    seed: int = typer.Option(0, help="Seed (random heads, sampling)."),
    allow_random_head: bool = typer.Option(False, "--allow-random-head", help="Run even when the prediction head "
                                           "is randomly initialised (the result then explains random weights)."),
    include_unconverged: bool = typer.Option(False, "--include-unconverged", help="Keep integrated gradients in "
                                             "the agreement table even when they fail their completeness check."),
) -> None:
    """Explain one prediction: attention, rollout, attention×gradient, Chefer relevancy and Captum
    attributions side by side, their agreement (Spearman, Kendall, top-k) and faithfulness (AOPC)."""
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from .explanation import explain as run_explain, methods_for
    from .aopc import faithfulness
    from .plots import plot_explanation, plot_faithfulness

    with status(f"loading {model}", quiet=quiet):
        lm = load_for_task(model, task, seed=seed, note=False)
    chosen = methods_for(lm) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    tgt: int | str | None = int(target) if target is not None and target.lstrip("-").isdigit() else target
    with status(f"explaining with {len(chosen)} methods", quiet=quiet):
        e = run_explain(lm, text, chosen, target=tgt, ig_steps=ig_steps, n_samples=samples, k=top_k, seed=seed,
                        allow_random_head=allow_random_head, include_unconverged=include_unconverged)
    for w in e.warnings:
        console.print(f"[bold red]WARNING:[/bold red] [red]{escape(w)}[/red]")
    out.mkdir(parents=True, exist_ok=True)
    plot_explanation(e, out / "explain.png")
    result = e.to_dict()
    if faithful:
        with status("faithfulness curves", quiet=quiet):
            f = faithfulness(lm, text, e.scores, target=e.target)
        plot_faithfulness(f, out / "faithfulness.png")
        result["faithfulness"] = f.to_dict()
    (out / "explain.json").write_text(json.dumps(result, indent=1))
    console.print(f"target [bold]{e.target_label}[/bold] (p={e.probability:.3f}); tokens: {len(e.tokens)}")
    table = Table("a", "b", "spearman", "kendall", f"top-{top_k}")
    for r in e.agreement:
        table.add_row(r["a"], r["b"], f"{r['spearman']:.3f}", f"{r['kendall']:.3f}", f"{r['topk_overlap']:.2f}")
    console.print(table)
    for m in e.meta.get("left_out_of_agreement", []):
        console.print(f"[red]{m} left out of the agreement table (failed its check; --include-unconverged keeps it)[/red]")
    methods_table = Table("method", "own check", "what it is and is not", title="methods")
    for m, n in e.notes.items():
        c = e.checks.get(m)
        check = "—" if c is None else (f"{c['check']}: ok" if c["ok"] else f"[bold red]{c['check']}: FAILED[/bold red]")
        methods_table.add_row(f"[red]{m}[/red]" if m in e.failed_checks else m, check, escape(n))
    console.print(methods_table)
    if faithful:
        console.print("AOPC deletion: " + ", ".join(f"{m}={v:.4f}" + (" (FAILED its check)" if m in e.failed_checks else "")
                                                    for m, v in result["faithfulness"]["aopc"]["deletion"].items()))
    written = [out / "explain.png"] + ([out / "faithfulness.png"] if faithful else []) + [out / "explain.json"]
    console.print("wrote " + ", ".join(map(str, written)), highlight=False)


def ablate(
    text: Optional[List[str]] = typer.Option(None, "--text", "-t", help="A text (repeatable)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Texts, one per line."),
    model: str = typer.Option("minilm", "--model", "-m", help=MODEL_HELP),
    task: str = typer.Option("auto", help=TASK_HELP),
    method: str = typer.Option("both", help="ablation, gradient or both (Michel et al. 2019)."),
    zero: Optional[List[str]] = typer.Option(None, "--zero", help="Only zero these heads (LAYER:HEAD, repeatable) "
                                             "and report the prediction change per text."),
    out: Path = typer.Option(Path("attnscope-ablate"), "--out", "-o", help="Output directory (PNG + JSON)."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    seed: int = typer.Option(0, help="Seed for a random classification head."),
    interactions: int = typer.Option(0, "--interactions", help="Also zero every pair of the K heads with the largest "
                                     "single-head ablation effect and plot the interaction (both − a − b); 0: off."),
    interaction_metric: str = typer.Option("kl", help="Effect used for --interactions: kl, prob_shift, logit_diff "
                                           "or loss_increase."),
) -> None:
    """Head importance over texts by ablation and/or gradient, as layer × head heatmaps; or, with --zero,
    the prediction change (KL, probability shift, logit difference) of removing given heads.

    With --interactions K, the top K heads by ablation effect are also zeroed in pairs: interactions.png
    shows each pair's effect minus the sum of the two single effects."""
    if interactions and zero:
        raise InputError("--interactions ranks heads by importance over the texts; --zero measures given heads only: "
                         "use one of them")
    if interactions and method not in ("ablation", "both"):
        raise InputError("--interactions needs the ablation method (--method ablation or both)")
    if interactions:
        from .ablation import MAX_INTERACTION_HEADS

        if not 2 <= interactions <= MAX_INTERACTION_HEADS:
            raise InputError(f"--interactions must be 0 (off) or 2..{MAX_INTERACTION_HEADS} heads, got {interactions}")
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from .ablation import head_importance
    from .interventions import ZeroHeads, intervene
    from .plots import plot_head_heatmap

    texts = _texts(text, file)
    with status(f"loading {model}", quiet=quiet):
        lm = load_for_task(model, task, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    if zero:
        heads = _heads(zero)
        table = Table("text", "KL", "prob shift", "logit diff", "flipped")
        rows = []
        with progress_bar("zeroing heads", quiet=quiet) as update:
            update(0, len(texts))
            results = []
            for t in texts:
                results.append(intervene(lm, t, [ZeroHeads(heads)]))
                update(len(results), len(texts))
        for t, r in zip(texts, results):
            rows.append({k: v for k, v in r.items() if k != "tokens"} | {"text": t})
            table.add_row(t[:50], f"{r['kl']:.4g}", f"{r['prob_shift']:+.4f}", f"{r['logit_diff']:+.4f}", str(r["flipped"]))
        console.print(table)
        (out / "zero_heads.json").write_text(json.dumps(rows, indent=1))
        console.print(f"wrote {out / 'zero_heads.json'}", highlight=False)
        return
    methods = ["ablation", "gradient"] if method == "both" else [method]
    result = {}
    for m in methods:
        with progress_bar(f"head importance by {m}", quiet=quiet) as update:
            hs = head_importance(lm, texts, method=m, progress=update)
        metric = "kl" if m == "ablation" else "gradient"
        plot_head_heatmap(hs[metric], out / f"heads_{m}.png", title=f"{lm.name}: head importance by {m} ({metric}, "
                          f"{len(texts)} texts)", label=metric)
        result[m] = hs.to_dict()
        best = sorted(hs.rows(), key=lambda r: -r[metric])[:5]
        console.print(f"[bold]{m}[/bold] top heads: " + ", ".join(f"L{r['layer']}H{r['head']}={r[metric]:.3g}" for r in best))
        console.print(f"wrote {out / f'heads_{m}.png'}", highlight=False)
        if m == "ablation" and interactions:
            from .ablation import head_interactions
            from .plots import plot_head_interactions

            with progress_bar("pairwise ablation", quiet=quiet) as update:
                inter = head_interactions(lm, texts, k=interactions, metric=interaction_metric, single=hs,
                                          progress=update)
            plot_head_interactions(inter, out / "interactions.png")
            result["interactions"] = inter.to_dict()
            console.print("largest interactions: " + ", ".join(f"{r['a']}+{r['b']}={r['interaction']:+.3g}"
                                                               for r in inter.rows()[:5]))
            console.print(f"wrote {out / 'interactions.png'}", highlight=False)
    (out / "head_importance.json").write_text(json.dumps(result, indent=1))
    console.print(f"wrote {out / 'head_importance.json'}", highlight=False)


def probe(
    group: Optional[List[str]] = typer.Option(None, "--group", "-g", help="NAME=word1,word2 (repeatable); "
                                              "default he/she/they."),
    template: Optional[List[str]] = typer.Option(None, "--template", help="Sentence with {} for the group word "
                                                 "(repeatable); default: built-in occupation templates."),
    direction: str = typer.Option("to", help="to: attention paid to the group word; from: attention from it "
                                  "to --attribute words."),
    attribute: Optional[List[str]] = typer.Option(None, "--attribute", help="Attribute words for --direction from."),
    model: str = typer.Option("minilm", "--model", "-m", help=MODEL_HELP),
    out: Path = typer.Option(Path("attnscope-probe"), "--out", "-o", help="Output directory (PNG + JSON)."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Bias probe: attention to/from word groups across templated sentences, Welch's t-test and Hedges' g.
    Attention weights alone are not evidence of model bias."""
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from ..models import load_model
    from .bias import NOTE, bias_probe
    from .plots import plot_bias

    groups = None
    if group:
        groups = {}
        for g in group:
            if "=" not in g:
                raise InputError(f"--group {g!r}: write NAME=word1,word2")
            name, ws = g.split("=", 1)
            groups[name.strip()] = [w.strip() for w in ws.split(",") if w.strip()]
    with status(f"loading {model}", quiet=quiet):
        lm = load_model(model)
    with status("probing", quiet=quiet):
        r = bias_probe(lm, groups, template or None, direction=direction, attribute_words=attribute or None)
    out.mkdir(parents=True, exist_ok=True)
    plot_bias(r, out / "probe.png")
    (out / "probe.json").write_text(json.dumps(r.to_dict(), indent=1))
    table = Table("a", "b", "mean a", "mean b", "t", "p", "Hedges g")
    for t in r.tests:
        table.add_row(t["a"], t["b"], f"{t['mean_a']:.4f}", f"{t['mean_b']:.4f}", f"{t['t']:.2f}", f"{t['p']:.3g}",
                      f"{t['hedges_g']:.2f}")
    console.print(table)
    console.print(f"[italic]{NOTE}[/italic]")
    console.print(f"wrote {out / 'probe.png'}, {out / 'probe.json'}", highlight=False)


def counterfactual(
    text: str = typer.Argument(..., help="The original text."),
    alternative: Optional[List[str]] = typer.Option(None, "--alt", "-a", help="A counterfactual text (repeatable); "
                                                    "without any, every word is masked in turn."),
    mode: str = typer.Option("mask", help="Per-word edit without --alt: mask, replace or delete."),
    replacement: Optional[str] = typer.Option(None, help="Replacement word for --mode replace."),
    model: str = typer.Option("minilm", "--model", "-m", help=MODEL_HELP),
    task: str = typer.Option("auto", help=TASK_HELP),
    out: Path = typer.Option(Path("attnscope-counterfactual"), "--out", "-o", help="Output directory."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    seed: int = typer.Option(0, help="Seed for a random classification head."),
) -> None:
    """Token interventions (mask/replace/delete each word, all its sub-tokens) ranked by prediction change,
    or user-given counterfactual texts compared with the original (KL, probability shift, attention MSE/KL)."""
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from .counterfactual import compare_counterfactuals, token_interventions
    from .plots import plot_token_effects

    with status(f"loading {model}", quiet=quiet):
        lm = load_for_task(model, task, seed=seed)
    with progress_bar("counterfactuals" if alternative else f"{mode} each word", quiet=quiet) as update:
        if alternative:
            rows = compare_counterfactuals(lm, text, alternative, progress=update)
            labels = [{**r, "word": r["text"][:40]} for r in rows]
        else:
            rows = token_interventions(lm, text, mode=mode, replacement=replacement, progress=update)
            labels = rows
    out.mkdir(parents=True, exist_ok=True)
    plot_token_effects(labels, out / "counterfactual.png", title=f"{lm.name}: effect on the prediction and attention")
    (out / "counterfactual.json").write_text(json.dumps(rows, indent=1))
    table = Table("edit", "KL", "prob shift", "attention MSE", "attention KL")
    for r in labels:
        table.add_row(r["word"], f"{r['kl']:.4g}", f"{r['prob_shift']:+.4f}", f"{r['attention_mse']:.3g}",
                      f"{r['attention_kl']:.3g}")
    console.print(table)
    console.print(f"wrote {out / 'counterfactual.png'}, {out / 'counterfactual.json'}", highlight=False)


def dropout(
    text: str = typer.Argument(..., help="The input text."),
    runs: int = typer.Option(20, help="Number of dropout runs."),
    p: Optional[float] = typer.Option(None, help="Attention dropout rate (default: the model's own)."),
    which: str = typer.Option("used", help="used (after attention dropout) or softmax (before)."),
    model: str = typer.Option("minilm", "--model", "-m", help=MODEL_HELP),
    out: Path = typer.Option(Path("attnscope-dropout"), "--out", "-o", help="Output directory."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """MC-dropout consistency of attention: mean/std/CV maps and pairwise correlation of runs."""
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    import numpy as np

    from ..models import load_model
    from .dropout import dropout_consistency
    from .plots import plot_dropout

    with status(f"loading {model}", quiet=quiet):
        lm = load_model(model)
    with progress_bar("dropout runs", quiet=quiet) as update:
        r = dropout_consistency(lm, text, n_runs=runs, p=p, which=which, seed=seed, progress=update)
    out.mkdir(parents=True, exist_ok=True)
    plot_dropout(r, out / "dropout.png")
    (out / "dropout.json").write_text(json.dumps({"pairwise_correlations": r.pairwise_correlations.tolist(),
                                                  "head_cv": r.head_cv().tolist(), "rates": r.rates,
                                                  "layers": r.layers, "tokens": r.tokens}, indent=1))
    c = r.pairwise_correlations
    console.print(f"{runs} runs: pairwise correlation mean {np.mean(c):.3f} (min {np.min(c):.3f}); "
                  f"mean CV {r.head_cv().mean():.3f}")
    console.print(f"wrote {out / 'dropout.png'}, {out / 'dropout.json'}", highlight=False)


def faithfulness(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP + " 'sentiment-minilm': the fine-tuned tweet "
                              "classifier (attnscope tasks sentiment train)."),
    data: str = typer.Option(..., "--data", "-d", help="Examples: a .jsonl file ({\"text\": ...} per line), a text "
                             "file (one per line), or tweets-heldout / bbc-sentences (packaged)."),
    methods: str = typer.Option("all", help="Comma-separated method names, or 'all' (every registered method); "
                                "the baselines random and attention are always added."),
    n: int = typer.Option(200, "--n", help="Number of examples (1-10000)."),
    out: Path = typer.Option(Path("attnscope-faithfulness"), "--out", "-o", help="Output directory: scores.parquet, "
                             "summary.json, table.md, curves.png."),
    task: str = typer.Option("auto", help=TASK_HELP),
    replacement: str = typer.Option("auto", help="Token a removed token is replaced by: auto (the Captum baseline "
                                    "token: pad, else unk, else eos), pad, mask or unk."),
    steps: int = typer.Option(10, help="Points of the deletion/insertion curves after the first (1-100)."),
    absolute: bool = typer.Option(False, "--absolute", help="Rank tokens by |score| (default: signed, evidence for "
                                  "the target first)."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="Skip examples longer than this many tokens (4-512)."),
    ig_steps: int = typer.Option(32, help="Integrated-gradients steps (1-1024)."),
    samples: int = typer.Option(32, help="LIME samples; Shapley uses samples/8 permutations (1-4096)."),
    bootstrap: int = typer.Option(2000, help="Bootstrap resamples of the confidence intervals (100-100000)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Perturbed inputs per forward pass (1-4096)."),
    checkpoint_every: int = typer.Option(10, "--checkpoint-every", help="Write the files of the examples done so far "
                                         "every this many examples (1-10000), so a long run leaves usable results."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    seed: int = typer.Option(0, help="Seed (example order, random baseline, sampling, bootstrap)."),
    allow_random_head: bool = typer.Option(False, "--allow-random-head", help="Run even when the prediction head "
                                           "is randomly initialised (the result then scores random weights)."),
    resume: bool = typer.Option(False, "--resume", help="Go on from the examples a stopped run left in --out (same "
                                "model, data, methods and settings); they are not scored again."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results already in --out."),
) -> None:
    """Faithfulness benchmark: every explanation method scored on many examples (deletion/insertion AOPC, ERASER
    comprehensiveness/sufficiency, agreement with leave-one-out, runtime) with bootstrap CIs and paired tests."""
    from .faithfulness_benchmark import LIMITS, _bounded, load_examples, resolve_methods, select_examples

    for name, v in (("n", n), ("steps", steps), ("max_tokens", max_tokens), ("ig_steps", ig_steps),
                    ("n_samples", samples), ("n_boot", bootstrap), ("batch_size", batch_size),
                    ("checkpoint_every", checkpoint_every)):
        try:
            _bounded(name, v)
        except InputError:
            lo, hi = LIMITS[name]
            flag = {"n_samples": "samples", "n_boot": "bootstrap"}.get(name, name).replace("_", "-")
            raise InputError(f"--{flag} must be between {lo} and {hi}, got {v}") from None
    if not 0 <= seed < 2**32:
        raise InputError(f"--seed must be between 0 and {2**32 - 1}, got {seed}")
    from .aopc import REPLACEMENTS

    if replacement not in REPLACEMENTS:
        raise InputError(f"--replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}")
    resolve_methods(methods)  # unknown names fail before the model loads
    check_out(out)
    previous = None
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: go on from the results in --out, or replace them")
    if (out / "scores.parquet").exists() and not overwrite:
        if not resume:
            raise InputError(f"{out} holds the results of a run; pass --resume to go on from them, --overwrite to "
                             f"replace them, or choose another --out")
        from .faithfulness_benchmark import load_result

        previous = load_result(out)
    set_threads(threads)
    set_placement(device, dtype)
    from .faithfulness_benchmark import benchmark_faithfulness

    alias = model if model == "sentiment-minilm" else None
    if alias:
        from ..errors import ModelLoadError
        from ..tasks.sentiment import default_model_dir

        if not (default_model_dir() / "config.json").is_file():
            raise ModelLoadError("no fine-tuned sentiment model yet; train it with `attnscope tasks sentiment train`")
        model = str(default_model_dir())
    examples = load_examples(data, n, seed)
    with status(f"loading {model}", quiet=quiet):
        lm = load_for_task(model, task, seed=seed, note=False)
    if alias:
        lm.name = alias
    chosen, skipped = select_examples(lm, examples, n, max_tokens)
    if not chosen:
        raise InputError(f"no example of --data has at most {max_tokens} tokens and two removable tokens")
    if len(chosen) < n:
        console.print(f"[yellow]{len(chosen)} examples (of {n} asked) fit --max-tokens {max_tokens}[/yellow]")
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint(partial) -> None:
        partial.save(out)

    with progress_bar(f"scoring {len(resolve_methods(methods))} methods", quiet=quiet) as update:
        r = benchmark_faithfulness(lm, chosen, methods, steps=steps, replacement=replacement, absolute=absolute,
                                   seed=seed, ig_steps=ig_steps, n_samples=samples, n_boot=bootstrap,
                                   batch_size=batch_size, allow_random_head=allow_random_head, progress=update,
                                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=previous)
    r.meta.update({"data": str(data), "skipped_examples": skipped, "max_tokens": max_tokens})
    for w in r.meta.get("warnings", []):
        console.print(f"[bold red]WARNING:[/bold red] [red]{escape(w)}[/red]")
    paths = r.save(out)
    from rich.table import Column

    table = Table(Column("method", no_wrap=True), "AOPC del ↑", "AOPC ins ↑", "comp ↑", "suff ↓", "ρ LOO ↑",
                  "s/example", "n", "flags")
    for s in r.summary:
        if s["status"] != "ok":
            table.add_row(s["method"], *["–"] * 6, "0", escape(s["status"][:80]))
            continue
        cells = [f"{s[k]['mean']:.3f}" for k in
                 ("aopc_deletion", "aopc_insertion", "comprehensiveness_aopc", "sufficiency_aopc", "spearman_loo")]
        flag = f"[red]⚠ failed its check on {s['flagged']}[/red]" if s["flagged"] else ""
        table.add_row(s["method"], *cells, f"{s['runtime_s']['mean']:.3f}", str(s["n"]), flag)
    console.print(table)
    console.print(f"means over the examples; 95 % bootstrap intervals in {out / 'table.md'}", highlight=False)
    console.print(escape(r.verdict), highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)


def attribute_generation(
    prompt: str = typer.Argument(..., help="The prompt (decoder-only LM) or the source text (encoder-decoder)."),
    model: str = typer.Option("smollm2", "--model", "-m", help=MODEL_HELP),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", "-n", help="Tokens to generate greedily (1..256)."),
    method: str = typer.Option("grad_x_input", help="grad_x_input or attnlrp (with the KV cache), or "
                               "integrated_gradients (full prefix per step); all three for encoder-decoders too."),
    ig_steps: int = typer.Option(32, help="Integrated-gradients steps per generated token."),
    out: Path = typer.Option(Path("attnscope-generation"), "--out", "-o", help="Output directory (PNG + JSON)."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
    allow_random_head: bool = typer.Option(False, "--allow-random-head", help="Run even when the LM head is "
                                           "randomly initialised (the result then explains random weights)."),
) -> None:
    """Attribute every generated token: generate greedily and attribute each token's logit to the prompt and the
    tokens generated before it (and the source, for encoder-decoders), as one heatmap."""
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    import numpy as np

    from ..models import load_model
    from .generation import generation_attribution, seq2seq_attribution
    from .plots import plot_generation_attribution

    with status(f"loading {model}", quiet=quiet):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lm = load_model(model)
    with status(f"generating and attributing {max_new_tokens} tokens ({method})", quiet=quiet):
        if getattr(lm.config, "is_encoder_decoder", False):
            r = seq2seq_attribution(lm, prompt, max_new_tokens, method, ig_steps=ig_steps,
                                    allow_random_head=allow_random_head)
        else:
            r = generation_attribution(lm, prompt, max_new_tokens, method, ig_steps=ig_steps,
                                       allow_random_head=allow_random_head)
    for w in r.warnings:
        console.print(f"[bold red]WARNING:[/bold red] [red]{escape(w)}[/red]")
    out.mkdir(parents=True, exist_ok=True)
    plot_generation_attribution(r, out / "generation.png")
    (out / "generation.json").write_text(json.dumps(r.to_dict(), indent=1))
    table = Table("step", "token", "p", "top tokens (score)", "check")
    for i, tok in enumerate(r.generated_tokens):
        labels = r.source_tokens + r.context_tokens
        row = np.concatenate(([] if r.source_scores is None else [r.source_scores[i]]) + [r.scores[i]])
        top = [j for j in np.argsort(-np.nan_to_num(np.abs(row), nan=-1.0), kind="stable")[:3] if np.isfinite(row[j])]
        c = r.checks[i] if i < len(r.checks) else {}
        check = "—" if not c else (f"{c['check']}: ok" if c["ok"] else f"[bold red]{c['check']}: FAILED[/bold red]")
        table.add_row(str(i), escape(repr(tok)), f"{r.probabilities[i]:.3f}",
                      escape(", ".join(f"{labels[j]!r} ({row[j]:+.3g})" for j in top)), check)
    console.print(table)
    console.print(f"[italic]{escape(r.method)}: {escape(r.note)}[/italic]")
    console.print(f"wrote {out / 'generation.png'}, {out / 'generation.json'}", highlight=False)
