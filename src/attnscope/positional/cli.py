"""`attnscope positional`: positional encodings and their effect on attention scores, one figure per kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..commands import DeviceOption, DtypeOption, QuietOption, ThreadsOption, check_out, set_placement, set_threads
from ..errors import InputError

DEFAULT_TEXT = "The cat sat on the mat because it was tired, and then the dog sat on the mat too."


def positional(
    kind: str = typer.Option(..., "--kind", "-k", help="sinusoidal | learned | rotary"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="learned: a BERT-style model (default minilm); "
                                        "rotary: a Llama-style model (default smollm2); sinusoidal: none."),
    text: str = typer.Option(DEFAULT_TEXT, "--text", "-t", help="learned: the text whose layer-0 scores are split; "
                             "rotary: the text whose q, k are held fixed."),
    out: Path = typer.Option(Path("attnscope-positional"), "--out", "-o", help="Output directory (PNG + JSON)."),
    positions: int = typer.Option(128, help="sinusoidal: number of positions; learned: rows of the table shown "
                                  "(0 = all)."),
    d_model: int = typer.Option(128, help="sinusoidal: model dimension (even)."),
    base: float = typer.Option(10000.0, help="sinusoidal: the frequency base."),
    layer: int = typer.Option(0, help="rotary: layer of the head."),
    head: int = typer.Option(0, help="rotary: query head."),
    max_distance: int = typer.Option(256, help="rotary: largest query-key distance."),
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    quiet: QuietOption = False,
) -> None:
    """Positional encodings and attention: sinusoidal matrix and position similarity; learned positions'
    similarity and the content/position split of layer-0 scores; rotary frequencies and a head's q·k vs distance."""
    from ..progress import status

    if kind not in ("sinusoidal", "learned", "rotary"):
        raise InputError(f"--kind must be sinusoidal, learned or rotary, got {kind!r}")
    if kind == "sinusoidal" and model is not None:
        raise InputError("--kind sinusoidal needs no --model (the encoding is a formula)")
    check_out(out)
    set_threads(threads)
    set_placement(device, dtype)
    from . import encodings as enc
    from . import plots

    console = Console(highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{kind}.png"
    if kind == "sinusoidal":
        res = enc.sinusoidal(positions, d_model, base)
        plots.plot_sinusoidal(res, png)
        summary = res.to_dict()
        _, prof = res.offset_profile()
        console.print(f"PE[m]·PE[n] at offsets 0..4: {' '.join(f'{v:.2f}' for v in prof[:5])} (d/2 = {d_model // 2})", markup=False)
    elif kind == "learned":
        from ..models import load_model

        name = model or "minilm"
        with status(f"loading {name}", quiet=quiet):
            lm = load_model(name)
        pos = enc.learned_positions(lm, positions or None)
        dec = enc.score_decomposition(lm, text)
        plots.plot_learned(pos, dec, png)
        summary = {"positions": pos.to_dict(), "decomposition": dec.to_dict()}
        ks, mean, _ = pos.offset_profile(4)
        console.print(f"mean cosine of position vectors at offsets 0..4: {' '.join(f'{v:.2f}' for v in mean)}")
        ps = dec.position_share()
        console.print(f"layer-0 position share (row-centred) per head: {' '.join(f'{v:.2f}' for v in ps)}; "
                      f"terms reproduce the model's scores to {dec.max_residual:.1e}")
    else:
        from ..models import load_model

        name = model or "smollm2"
        with status(f"loading {name}", quiet=quiet):
            lm = load_model(name)
        prof = enc.rotary_profile(lm, text, layer=layer, head=head, max_distance=max_distance)
        plots.plot_rotary(prof, png)
        summary = prof.to_dict()
        fr = prof.frequencies
        console.print(f"rotary: d_head {fr.head_dim}, wavelengths {fr.wavelengths.min():.1f} … "
                      f"{fr.wavelengths.max():.3g} tokens; self-check vs captured attention {prof.max_check_error:.1e}")
        for (q, k), s in zip(prof.pairs, prof.score):
            console.print(f"  q={prof.tokens[q]!r}[{q}] k={prof.tokens[k]!r}[{k}]: score at Δ=0 {s[0]:+.2f}, "
                          f"Δ=1 {s[1]:+.2f}, Δ={prof.distances[-1]} {s[-1]:+.2f}", markup=False)
    (out / f"{kind}.json").write_text(json.dumps(summary, indent=1))
    console.print(f"wrote {png} and {out / f'{kind}.json'}", markup=False)
