"""`attnscope report`: a self-contained HTML report (and, with --figures, every figure as PNG/SVG/PDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..commands import (DeviceOption, DtypeOption, QuietOption, ThreadsOption, check_out, set_placement,
                        set_threads)
from ..errors import InputError


def report(
    text: Optional[str] = typer.Argument(None, help="Text to analyse (captured with --model). Omit when using --trace."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A saved trace (.safetensors) instead of TEXT."),
    out: Path = typer.Option(..., "--out", help="Output directory; report.html is written there."),
    model: str = typer.Option("minilm", "--model", help="Model for TEXT: a catalogue name, a local path or a hub id."),
    target: Optional[str] = typer.Option(None, "--target", help="Target text for encoder-decoder models."),
    title: Optional[str] = typer.Option(None, "--title", help="Report title."),
    figures: bool = typer.Option(False, "--figures", help="Also save every figure as PNG, SVG and PDF under OUT/figures."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Write one offline HTML report (figures, head statistics and roles, rollout, metadata) for TEXT or --trace."""
    from ..progress import progress_bar, status

    if (text is None) == (trace is None):
        raise InputError("give either TEXT or --trace FILE (not both, not neither)")
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from ..trace import AttentionTrace
    from .report import write_report

    if trace is not None:
        t = AttentionTrace.load(trace)
    else:
        from ..capture import capture
        from ..models import load_model

        kwargs = {"target": target} if target is not None else {}
        with status(f"loading {model}", quiet=quiet) as say:
            lm = load_model(model, progress=say)
        with status("capturing attention", quiet=quiet):
            t = capture(lm, text, mode="full", **kwargs)
    with status("writing the report", quiet=quiet):
        path = write_report(t, out, title)
    typer.echo(f"report: {path}")
    if figures:
        from .gallery import save_gallery

        with progress_bar("figures", quiet=quiet) as update:
            written = save_gallery(t, Path(out) / "figures", progress=update)
        typer.echo(f"figures: {len(written)} files under {Path(out) / 'figures'}")


def view3d(
    text: Optional[str] = typer.Argument(None, help="Text to capture with --model. Omit when using --trace."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A saved trace (.safetensors) instead of TEXT."),
    out: Path = typer.Option(..., "--out", help="The HTML page to write."),
    model: str = typer.Option("minilm", "--model", help="Model for TEXT: a catalogue name, a local path or a hub id."),
    stream: Optional[str] = typer.Option(None, "--stream", help="Self-attention stream (default: the first)."),
    view: list[str] = typer.Option(["layers", "flow"], "--view",
                                   help="layers (query × key × layer points) and/or flow (tokens × layers); repeat."),
    head: Optional[int] = typer.Option(None, "--head", help="One head of the layers view (default: mean of heads)."),
    threshold: float = typer.Option(0.1, "--threshold", help="Initial weight threshold of the layers view, in (0, 1]."),
    max_points: int = typer.Option(20000, "--max-points", help="Most points of the layers view at its lowest threshold."),
    top_k: int = typer.Option(3, "--top-k", help="Flow view: strongest keys drawn per query (1..64)."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Write an offline 3-D HTML page: attention weights as query × key × layer points with a threshold slider, and the flow through the layers."""
    from ..progress import status

    if (text is None) == (trace is None):
        raise InputError("give either TEXT or --trace FILE (not both, not neither)")
    check_out(out, kind="file")
    set_threads(threads)
    set_placement(device, dtype)
    from ..trace import AttentionTrace
    from .flow3d import write_flow_3d_html

    if trace is not None:
        t = AttentionTrace.load(trace)
    else:
        from ..capture import capture
        from ..models import load_model

        with status(f"loading {model}", quiet=quiet) as say:
            lm = load_model(model, progress=say)
        with status("capturing attention", quiet=quiet):
            t = capture(lm, text, mode="full")
    with status("writing the 3-D page", quiet=quiet):
        path = write_flow_3d_html(t, out, stream, view, head=head, threshold=threshold, max_points=max_points,
                                  top_k=top_k)
    typer.echo(f"3-D view: {path}")
