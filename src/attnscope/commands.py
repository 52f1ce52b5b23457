"""Core CLI commands: `attnscope analyze` and `attnscope models`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import InputError

console = Console()


def parse_indices(spec: str | None, what: str) -> list[int] | None:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; None/'all' -> None."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:  # a range; the first character may be a minus sign
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise InputError(f"--{what}s {spec!r} is not a list of {what} indices like '0,2,5-7'") from None
    return out


def read_text(text: str | None, file: Path | None) -> str:
    """The input text from the argument, a file, or stdin ('-'); bytes must be UTF-8."""
    if file is not None:
        if not file.is_file():
            raise InputError(f"--file {file}: no such file")
        raw = file.read_bytes()
    elif text is None or text == "-":
        if sys.stdin.isatty() and text is None:
            raise InputError("give a TEXT argument, --file PATH, or pipe text on stdin ('-')")
        raw = sys.stdin.buffer.read()
    else:
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"input is not valid UTF-8 (byte {e.start}: {e.reason}); re-encode it as UTF-8") from None


def analyze(
    text: Optional[str] = typer.Argument(None, help="Text to analyse; '-' or omitted reads stdin."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file."),
    model: str = typer.Option("minilm", "--model", "-m", help="Catalogue name, local path or hub id."),
    layers: Optional[str] = typer.Option(None, help="Layers to capture, e.g. '0,2-4' (default all)."),
    heads: Optional[str] = typer.Option(None, help="Heads to capture, e.g. '0-3' (default all)."),
    stream: Optional[str] = typer.Option(None, help="Stream for encoder-decoders: encoder_self|decoder_self|cross."),
    target: Optional[str] = typer.Option(None, help="Target text (teacher forcing) for encoder-decoder models."),
    out: Path = typer.Option(Path("attnscope-out"), "--out", "-o", help="Directory for figures and the trace."),
    fmt: list[str] = typer.Option(["png"], "--format", help="Figure format(s): png, svg, pdf (repeatable)."),
    save_trace: bool = typer.Option(False, "--save-trace", help="Also write trace.safetensors (float16)."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut text longer than the model's limit (says what)."),
) -> None:
    """Capture a text's attention, print a per-layer x head summary and write heatmap figures."""
    from .capture import capture
    from .models import load_model
    from .render import layer_head_grid, layer_means, save_figure

    bad = [f for f in fmt if f not in ("png", "svg", "pdf")]
    if bad:
        raise InputError(f"--format {bad[0]!r} is not one of png, svg, pdf")
    body = read_text(text, file)
    layer_sel, head_sel = parse_indices(layers, "layer"), parse_indices(heads, "head")
    with console.status(f"loading {model}…"):
        lm = load_model(model, progress=lambda m: console.log(m))
    with console.status("capturing attention…"):
        trace = capture(lm, body, target=target, layers=layer_sel, heads=head_sel, mode=["full", "stats"],
                        statistics="all", truncate=truncate)
    s = trace.resolve_stream(stream if stream else ("cross" if "cross" in trace.streams else None))
    if "truncated" in trace.meta:
        t = trace.meta["truncated"]
        console.print(f"[yellow]truncated: kept {t['kept_tokens']} of {t['original_tokens']} tokens "
                      f"(the first {t['kept_characters']} characters)[/]")
    print_summary(trace, s)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    written += save_figure(layer_head_grid(trace, stream=s), out / f"grid_{s}", formats=tuple(fmt))
    written += save_figure(layer_means(trace, stream=s), out / f"layer_means_{s}", formats=tuple(fmt))
    if save_trace:
        written.append(trace.save(out / "trace.safetensors"))
    for p in written:
        console.print(f"wrote {p}")


def print_summary(trace, stream: str) -> None:
    """Rich table: per layer x head entropy, max weight and first-token mass."""
    hs = trace.head_stats(stream)
    q = trace.query_tokens(stream)
    table = Table(title=f"{trace.model_id} · {stream} · {len(q)} query tokens · mean over queries")
    for col in ("layer", "head", "entropy", "max", "first-token mass", "effective pos."):
        table.add_column(col, justify="right")
    for li, layer in enumerate(trace.layers[stream]):
        for hi, head in enumerate(trace.heads[stream]):
            table.add_row(str(layer), str(head), f"{hs['entropy'][li, hi]:.3f}", f"{hs['max'][li, hi]:.3f}",
                          f"{hs['first_token_mass'][li, hi]:.3f}", f"{hs['effective_positions'][li, hi]:.2f}")
    console.print(table)


def models() -> None:
    """List the catalogue: name, architecture, layers x heads, size on disk, readiness."""
    from .models import describe_catalogue

    table = Table(title="attnscope models (any Hugging Face id or local path also works)")
    for col in ("name", "architecture", "layers x heads", "size", "status"):
        table.add_column(col)
    for r in describe_catalogue():
        size = f"{r['size_bytes'] / 1e6:.0f} MB" if r["size_bytes"] else "-"
        table.add_row(r["name"], r["architecture"], r["layers_x_heads"], size, r["status"])
    console.print(table)


def prepare(name: str = typer.Argument(..., help="Catalogue model to convert/load once.")) -> None:
    """Convert a packaged model into the local cache now (SmolLM2 from GGUF, Whisper from CTranslate2)."""
    from .models import load_model

    lm = load_model(name, progress=lambda m: console.log(m))
    console.print(f"{name} ready: {type(lm.model).__name__}")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
    app.command("models")(models)
    app.command("prepare")(prepare)
