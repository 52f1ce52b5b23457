"""`attnscope serve`: the web explorer and the REST API under uvicorn."""

from __future__ import annotations

from typing import Optional

import typer

from ..commands import DEVICE_HELP, DtypeOption, THREADS_HELP, set_placement, set_threads


def serve(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Default model (loaded at start-up) "
                                        "\\[default: minilm]."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 127.0.0.1 keeps it on this machine."),
    port: int = typer.Option(8765, help="TCP port."),
    allow_model: list[str] = typer.Option(None, "--allow-model", help="Extra model names/paths requests may use "
                                                                       "(besides the catalogue)."),
    allowed_host: list[str] = typer.Option(None, "--allowed-host", help="Host-header name the server answers to "
                                           "besides 127.0.0.1, localhost, ::1 and --host (repeatable; '*' = any)."),
    max_text_chars: int = typer.Option(20_000, help="Longest text accepted (characters)."),
    max_batch: int = typer.Option(64, help="Most texts in one /v1/batch request."),
    queue_size: int = typer.Option(8, help="Requests that may wait for the model (429 beyond)."),
    timeout: float = typer.Option(120.0, help="Per-request timeout in seconds (504 beyond)."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP + " 0: torch's own default."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP + " The inference worker loads every model there."),
    dtype: DtypeOption = "float32",
) -> None:
    """Serve the attention explorer (open http://HOST:PORT/) and the REST API (/v1, docs at /docs)."""
    from .._optional import require

    require("fastapi", "web", "attnscope serve")
    uvicorn = require("uvicorn", "web", "attnscope serve")
    n_threads = None if threads == 0 else set_threads(threads)
    set_placement(device, dtype)  # the worker's load_model calls (this process) use them

    from .app import create_app
    from .config import ServerConfig

    from ..models import CATALOGUE, DEFAULT_MODEL

    model = model or DEFAULT_MODEL

    allowed = list(CATALOGUE) + [m for m in (allow_model or []) if m not in CATALOGUE]
    config = ServerConfig(model=model, host=host, port=port, allowed_models=allowed,
                          allowed_hosts=list(allowed_host or []), max_text_chars=max_text_chars,
                          max_batch=max_batch, queue_size=queue_size, timeout_s=timeout,
                          torch_threads=n_threads)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: binding {host}: the explorer and API are reachable from other machines",
                    fg=typer.colors.YELLOW, err=True)
    typer.echo(f"attnscope explorer: http://{host}:{port}/  (API docs: /docs)")
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
