"""Core CLI commands (`attnscope analyze`, `models`, `prepare`) and what every command shares: index
selections, output-path checks, the thread policy. Imports only typer and rich at module level."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import InputError

console = Console()

MAX_INDEX = 4096
"""Largest layer/head index a selection may name (models have far fewer); a range is checked before it
is expanded, so '0-3000000' is refused at once."""

UNSAFE_OUT_ROOTS = ("/proc", "/sys", "/dev")


def parse_indices(spec: str | None, what: str) -> list[int] | None:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; None/'all' -> None. Indices beyond ±MAX_INDEX are refused."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:  # a range; the first character may be a minus sign
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                ends = [int(a), int(b)]
            else:
                ends = [int(part)]
        except ValueError:
            raise InputError(f"--{what}s {spec!r} is not a list of {what} indices like '0,2,5-7'") from None
        for i in ends:
            if abs(i) > MAX_INDEX:
                raise InputError(f"--{what}s {spec!r}: {what} index {i} is out of range (models have at most "
                                 f"{MAX_INDEX} {what}s); pick indices from the model's {what}s")
        if len(ends) == 2:
            if ends[1] < ends[0]:
                raise InputError(f"--{what}s {spec!r}: range {part!r} runs backwards; write it low-high")
            out.extend(range(ends[0], ends[1] + 1))
        else:
            out.append(ends[0])
        if len(out) > MAX_INDEX:
            raise InputError(f"--{what}s {spec!r} names more than {MAX_INDEX} {what}s")
    return out


def check_out(path: Path, *, option: str = "--out", kind: str = "dir") -> Path:
    """Refuse an output path that cannot be written, before any work (nothing is created here).

    ``kind="dir"``: a directory to create or reuse (an existing file is refused); ``kind="file"``: a file to
    create or replace (an existing directory is refused). Pseudo file systems (/proc, /sys, /dev) are
    refused, and the nearest existing parent must be a writable directory.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    for root in UNSAFE_OUT_ROOTS:
        if resolved == Path(root) or Path(root) in resolved.parents:
            raise InputError(f"{option} {path}: cannot write output under {root}; choose a normal directory")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is an existing file, not a directory; give a directory to write into")
    if kind == "file" and path.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file path")
    parent = resolved if kind == "dir" else resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is a file, so nothing can be created under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {parent} is not writable; choose another directory")
    return path


# ---------------------------------------------------------------------------- threads
THREADS_ENV = "ATTNSCOPE_THREADS"
THREADS_HELP = ("torch CPU threads (default: $ATTNSCOPE_THREADS, else $OMP_NUM_THREADS, else half the CPUs this "
                "process may use, 1 to 4). More threads than free cores makes a busy machine many times slower.")
MAX_THREADS = 256


def default_threads() -> int:
    """Half the CPUs this process may use, between 1 and 4: leaves room for other work, and counts two
    hyper-threads as one core (oversubscribed OpenMP threads slow a capture down many times)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


def set_threads(threads: int | None) -> int:
    """Apply the thread policy: ``threads`` if given, else $ATTNSCOPE_THREADS, else leave $OMP_NUM_THREADS
    alone when set, else :func:`default_threads`. Calls ``torch.set_num_threads``; returns the count."""
    import torch

    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise InputError(f"${THREADS_ENV}={env!r} is not a whole number of threads") from None
        elif os.environ.get("OMP_NUM_THREADS", "").strip():
            return torch.get_num_threads()
        else:
            threads = default_threads()
    if not 1 <= threads <= MAX_THREADS:
        raise InputError(f"--threads {threads}: give a number of threads from 1 to {MAX_THREADS}")
    torch.set_num_threads(threads)
    return threads


# ---------------------------------------------------------------------------- device and dtype
DEVICE_HELP = ("Where the model runs: cpu, cuda, cuda:N or auto (cuda when torch sees a GPU, else cpu). "
               "Traces are always stored on the CPU.")
DTYPE_HELP = ("Model precision: float32, bfloat16 or float16. Attention probabilities and statistics are "
              "computed in float32 from the model's q/k whatever the precision.")


def set_placement(device: str = "cpu", dtype: str = "float32"):
    """Apply --device / --dtype: checked now (a one-line error before any work), then used by every model
    the command loads (:func:`attnscope.devices.set_default_placement`). Returns (torch device, dtype)."""
    from .devices import set_default_placement

    return set_default_placement(device, dtype)


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


def _read_audio_for(lm, audio: Path, truncate: bool):
    """The WAV file as the model's input: mono float32 at the feature extractor's rate, at most its window."""
    from .audio import read_wav

    fe = lm.processor.feature_extractor
    window = float(getattr(fe, "chunk_length", 30))
    return read_wav(audio, int(fe.sampling_rate), max_seconds=window, truncate=truncate)


QUIET_HELP = "No progress display (it is drawn on stderr, and only when stderr is a terminal)."

# One declaration of each option shared by the commands that run a model (default given at the parameter).
ThreadsOption = Annotated[Optional[int], typer.Option("--threads", help=THREADS_HELP)]
DeviceOption = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
DtypeOption = Annotated[str, typer.Option("--dtype", help=DTYPE_HELP)]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)]


def analyze(
    text: Optional[str] = typer.Argument(None, help="Text to analyse; '-' or omitted reads stdin."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Speech models (whisper-tiny-en): a WAV file "
                                         "(any rate, mono or stereo, at most 30 s) instead of TEXT."),
    model: str = typer.Option("minilm", "--model", "-m", help="Catalogue name, local path or hub id."),
    layers: Optional[str] = typer.Option(None, help="Layers to capture, e.g. '0,2-4' (default all)."),
    heads: Optional[str] = typer.Option(None, help="Heads to capture, e.g. '0-3' (default all)."),
    stream: Optional[str] = typer.Option(None, help="Stream for encoder-decoders: encoder_self|decoder_self|cross."),
    target: Optional[str] = typer.Option(None, help="Target text (teacher forcing) for encoder-decoder models; "
                                         "with --audio, default: the model's own transcript."),
    out: Path = typer.Option(Path("attnscope-out"), "--out", "-o", help="Directory for figures and the trace."),
    fmt: list[str] = typer.Option(["png"], "--format", help="Figure format(s): png, svg, pdf (repeatable)."),
    save_trace: bool = typer.Option(False, "--save-trace", help="Also write trace.safetensors (float16)."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut text longer than the model's limit (says what)."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Capture a text's attention, print a per-layer x head summary and write heatmap figures."""
    from .caveat import ATTENTION_CAVEAT_SHORT
    from .progress import status

    bad = [f for f in fmt if f not in ("png", "svg", "pdf")]
    if bad:
        raise InputError(f"--format {bad[0]!r} is not one of png, svg, pdf")
    check_out(out)
    if audio is not None and (text is not None or file is not None):
        raise InputError("give either --audio FILE.wav (speech models) or a text, not both")
    if audio is not None and not audio.is_file():
        raise InputError(f"--audio {audio}: no such file")
    body = read_text(text, file) if audio is None else None
    layer_sel, head_sel = parse_indices(layers, "layer"), parse_indices(heads, "head")
    set_threads(threads)
    set_placement(device, dtype)
    from .capture import capture
    from .models import load_model
    from .render import layer_head_grid, layer_means, save_figure

    with status(f"loading {model}", quiet=quiet) as say:
        lm = load_model(model, progress=say)
    speech = lm.kind == "speech-seq2seq"
    if speech and audio is None:
        raise InputError(f"{model} is a speech model: pass the audio as --audio FILE.wav (TEXT is not used), "
                         "or see `attnscope tasks whisper-timestamps` for word timings")
    if audio is not None and not speech:
        raise InputError(f"--audio is for speech models (whisper-tiny-en); {model} takes text")
    with status("capturing attention", quiet=quiet):
        if speech:
            x, sr = _read_audio_for(lm, audio, truncate)
            if target is None:
                from .tasks.whisper_timestamps import transcribe

                target, _ = transcribe(lm, x, sr)
                console.print(f"transcript: {target!r}")
            trace = capture(lm, audio=x, sampling_rate=sr, target=target, layers=layer_sel, heads=head_sel,
                            mode=["full", "stats"], statistics="all")
        else:
            trace = capture(lm, body, target=target, layers=layer_sel, heads=head_sel, mode=["full", "stats"],
                            statistics="all", truncate=truncate)
    s = trace.resolve_stream(stream if stream else ("cross" if "cross" in trace.streams else None))
    if "truncated" in trace.meta:
        t = trace.meta["truncated"]
        console.print(f"[yellow]truncated: kept {t['kept_tokens']} of {t['original_tokens']} tokens "
                      f"(the first {t['kept_characters']} characters)[/]")
    print_summary(trace, s)
    console.print(ATTENTION_CAVEAT_SHORT, style="dim", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    written += save_figure(layer_head_grid(trace, stream=s), out / f"grid_{s}", formats=tuple(fmt))
    written += save_figure(layer_means(trace, stream=s), out / f"layer_means_{s}", formats=tuple(fmt))
    if save_trace:
        written.append(trace.save(out / "trace.safetensors"))
    for p in written:
        console.print(f"wrote {p}", highlight=False)


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


def prepare(
    name: str = typer.Argument(..., help="Catalogue model to convert/load once."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Convert a packaged model into the local cache now (SmolLM2 from GGUF, Whisper from CTranslate2)."""
    from .progress import status

    set_threads(threads)

    set_placement(device, dtype)
    from .models import load_model

    with status(f"preparing {name}", quiet=quiet) as say:
        lm = load_model(name, progress=say)
    console.print(f"{name} ready: {type(lm.model).__name__}")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
    app.command("models")(models)
    app.command("prepare")(prepare)
