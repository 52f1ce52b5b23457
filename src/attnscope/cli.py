"""The `attnscope` command. Sub-command groups live next to their package (`<pkg>/cli.py`).

Commands are registered by name and imported only when they run (or their own ``--help`` is asked), so
``attnscope --help`` and ``attnscope --version`` import no model code (torch, transformers, matplotlib) and
each command imports only what it uses. The one-line help shown by ``attnscope --help`` comes from
:data:`SHORT_HELP`; tests check that it matches each command's own help. The top-level help is plain click
output (rich's formatter costs more start-up time than everything else); each command's help is rich.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

# Sub-command groups: (module, attribute, group name). One line each; a module that fails to import
# is a bug and must fail loudly, so nothing here is optional.
SUBCOMMAND_GROUPS: list[tuple[str, str, str]] = [
    # --- sub-command groups (one line each) ---
    ("attnscope.tasks.cli", "app", "tasks"),
    ("attnscope.seq2seq.cli", "app", "seq2seq"),
]
# Plain commands defined in other modules: (module, function name, command name).
EXTRA_COMMANDS: list[tuple[str, str, str]] = [
    # --- extra commands (one line each) ---
    ("attnscope.commands", "analyze", "analyze"),
    ("attnscope.commands", "models", "models"),
    ("attnscope.commands", "prepare", "prepare"),
    ("attnscope.render.cli", "report", "report"),
    ("attnscope.render.cli", "view3d", "view3d"),
    ("attnscope.server.cli", "serve", "serve"),
    ("attnscope.corpus.cli", "corpus", "corpus"),
    ("attnscope.attribution.cli", "explain", "explain"),
    ("attnscope.attribution.cli", "ablate", "ablate"),
    ("attnscope.attribution.cli", "probe", "probe"),
    ("attnscope.attribution.cli", "counterfactual", "counterfactual"),
    ("attnscope.attribution.cli", "dropout", "dropout"),
    ("attnscope.attribution.cli", "attribute_generation", "attribute-generation"),
    ("attnscope.attribution.robustness_cli", "robustness", "robustness"),
    ("attnscope.attribution.linguistic_cli", "linguistic_heads", "linguistic-heads"),
    ("attnscope.attribution.cli", "faithfulness", "faithfulness"),
    ("attnscope.positional.cli", "positional", "positional"),
]
# The first line of each command's help, shown by `attnscope --help` without importing the command's module.
# A command missing here still works; listing it then imports its module.
SHORT_HELP: dict[str, str] = {
    "analyze": "Capture a text's attention, print a per-layer x head summary and write heatmap figures.",
    "models": "List the catalogue: name, architecture, layers x heads, size on disk, readiness.",
    "prepare": "Convert a packaged model into the local cache now (SmolLM2 from GGUF, Whisper from CTranslate2).",
    "report": "Write one offline HTML report (figures, head statistics and roles, rollout, metadata) for TEXT or "
              "--trace.",
    "view3d": "Write an offline 3-D HTML page: attention weights as query × key × layer points with a threshold "
              "slider, and the flow through the layers.",
    "serve": "Serve the attention explorer (open http://HOST:PORT/) and the REST API (/v1, docs at /docs).",
    "corpus": "Per-text per-head attention statistics of a corpus: Parquet, resumable, local or Ray.",
    "explain": "Explain one prediction: attention, rollout, attention×gradient, Chefer relevancy and Captum "
               "attributions side by side, their agreement (Spearman, Kendall, top-k) and faithfulness (AOPC).",
    "ablate": "Head importance over texts by ablation and/or gradient, as layer × head heatmaps; or, with --zero, "
              "the prediction change (KL, probability shift, logit difference) of removing given heads.",
    "probe": "Bias probe: attention to/from word groups across templated sentences, Welch's t-test and Hedges' g. "
             "Attention weights alone are not evidence of model bias.",
    "counterfactual": "Token interventions (mask/replace/delete each word, all its sub-tokens) ranked by prediction "
                      "change, or user-given counterfactual texts compared with the original (KL, probability shift, "
                      "attention MSE/KL).",
    "dropout": "MC-dropout consistency of attention: mean/std/CV maps and pairwise correlation of runs.",
    "attribute-generation": "Attribute every generated token: generate greedily and attribute each token's logit to "
                            "the prompt and the tokens generated before it (and the source, for encoder-decoders), as "
                            "one heatmap.",
    "robustness": "Perturbation robustness: per-head KL/JS divergence of attention from the clean run under noise, "
                  "over seeds.",
    "linguistic-heads": "Linguistic head roles: per dependency relation the best head vs a fixed-offset baseline, "
                        "and coreference heads.",
    "faithfulness": "Faithfulness benchmark: every explanation method scored on many examples (deletion/insertion "
                    "AOPC, ERASER comprehensiveness/sufficiency, agreement with leave-one-out, runtime) with bootstrap "
                    "CIs and paired tests.",
    "positional": "Positional encodings and attention: sinusoidal matrix and position similarity; learned positions' "
                  "similarity and the content/position split of layer-0 scores; rotary frequencies and a head's q·k vs "
                  "distance.",
    "tasks": "Task analyses on real models: sentiment, QA, alignment, generation, dialogue.",
    "seq2seq": "Train Bahdanau/Luong attention seq2seq models and watch their alignments.",
}


def _entries() -> dict[str, tuple[str, str]]:
    """Command name -> (module, attribute), in the order `attnscope --help` lists them."""
    out = {name: (module, attr) for module, attr, name in EXTRA_COMMANDS}
    out.update({name: (module, attr) for module, attr, name in SUBCOMMAND_GROUPS})
    return out


def load_command(name: str) -> Any:
    """Import the module of command ``name`` and build its click command (a group for a Typer app)."""
    module, attr = _entries()[name]
    obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, typer.Typer):
        cmd = typer.main.get_group(obj)
    else:
        info = typer.models.CommandInfo(name=name, callback=obj)
        cmd = typer.main.get_command_from_info(info, pretty_exceptions_short=True,
                                               rich_markup_mode=typer.core.DEFAULT_MARKUP_MODE)
    cmd.name = name
    return cmd


class _Stub(TyperCommand):
    """Stands for a command in the help listing until the command is run."""


class LazyGroup(TyperGroup):
    """A group whose commands are imported on first use (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in _entries():
            if name not in self.commands:
                help_line = SHORT_HELP.get(name)
                self.commands[name] = (_Stub(name, help=help_line, short_help=help_line) if help_line
                                       else load_command(name))

    def resolve_command(self, ctx: Any, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        if isinstance(cmd, _Stub) and name is not None:
            cmd = self.commands[name] = load_command(name)
        return name, cmd, rest


app = typer.Typer(
    name="attnscope",
    help="Capture, analyse and visualise attention in Transformer and seq2seq models.",
    cls=LazyGroup,
    rich_markup_mode=None,  # plain help here: typer's rich formatter alone takes longer to import than the rest
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version() -> str:
    """The installed attnscope version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("attnscope")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"attnscope {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                                help="Print the attnscope version and exit."),
) -> None:
    """Capture, analyse and visualise attention in Transformer and seq2seq models."""


def _register() -> None:
    """Kept for callers of the former eager registration: commands now register themselves lazily."""


def _os_error_message(e: OSError) -> str:
    """One line for an OS error: what failed, on which path, and what to do."""
    what = e.strerror or str(e) or type(e).__name__
    path = f": {e.filename}" if e.filename else ""
    return f"{what}{path} (check the path and its permissions)"


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns attnscope errors and OS errors into a one-line message and exit 2."""
    try:
        app(args=argv, standalone_mode=True)
    except Exception as e:  # imported here: the errors module is not needed on the way in
        from .errors import AttnscopeError

        if isinstance(e, AttnscopeError):
            message = str(e)
        elif isinstance(e, OSError):
            message = _os_error_message(e)
        else:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(2)
