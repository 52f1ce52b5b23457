"""The `attnscope` command. Sub-command groups live next to their package (`<pkg>/cli.py`)."""

from __future__ import annotations

import importlib
import sys

import typer

from .errors import AttnscopeError

app = typer.Typer(
    name="attnscope",
    help="Capture, analyse and visualise attention in Transformer and seq2seq models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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
    ("attnscope.render.cli", "report", "report"),
    ("attnscope.server.cli", "serve", "serve"),
    ("attnscope.corpus.cli", "corpus", "corpus"),
    ("attnscope.attribution.cli", "explain", "explain"),
    ("attnscope.attribution.cli", "ablate", "ablate"),
    ("attnscope.attribution.cli", "probe", "probe"),
    ("attnscope.attribution.cli", "counterfactual", "counterfactual"),
    ("attnscope.attribution.cli", "dropout", "dropout"),
]


def _register() -> None:
    from . import commands  # analyze, models, …

    commands.register(app)
    for module, attr, name in SUBCOMMAND_GROUPS:
        app.add_typer(getattr(importlib.import_module(module), attr), name=name)
    for module, func, name in EXTRA_COMMANDS:
        app.command(name)(getattr(importlib.import_module(module), func))


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns attnscope errors into a one-line message and exit code 2."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except AttnscopeError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
