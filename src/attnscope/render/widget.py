"""A notebook widget linked to Python (anywidget): select a layer/head in the view or in Python.

``AttentionWidget(trace)`` shows a layer × head grid of thumbnails, the selected head's map and the
selected layer's head statistics. The selection is three synced traits — ``stream``, ``layer``,
``head`` (model indices) — so clicking a head in the view updates ``w.layer`` / ``w.head`` in Python,
and ``w.select(layer=3, head=5)`` (or ``w.head = 5``) redraws the view; ``w.observe(fn, ["layer",
"head"])`` runs Python code on every selection. The JavaScript is bundled in the package
(``render/static/widget.js``, an ES module): no CDN, no network.

What goes to the browser is bounded whatever the trace's length: uint8 thumbnails (max-pooled to
``THUMB_SIZE``²) of the current stream, per-head statistics, token labels, and only the *selected*
head's map, float32, max-pooled above ``MAX_MAP_TOKENS`` tokens per side; a new selection sends the
new head's map. Without a kernel (an exported notebook) the static view (``AttentionTrace._repr_html_``,
:mod:`attnscope.render.notebook`) is what remains.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import InputError

anywidget = require("anywidget", "notebook", "the linked notebook widget",
                    "without it, a trace still shows as a static view in a notebook cell")
import traitlets  # noqa: E402  (installed with anywidget)

MAX_MAP_TOKENS = 512  # the selected head's map is sent as at most this many rows and columns
STATS = ("entropy", "max", "first_token_mass", "mean_distance")
_STATIC = Path(__file__).parent / "static"


def _pool_max(m: np.ndarray, most: int) -> tuple[np.ndarray, int]:
    """(Nq, Nk) max-pooled so neither side exceeds ``most``; returns the map and the bin width in tokens."""
    bins = max(1, math.ceil(max(m.shape) / most))
    if bins == 1:
        return m, 1
    nq, nk = (math.ceil(d / bins) for d in m.shape)
    padded = np.zeros((nq * bins, nk * bins), m.dtype)
    padded[:m.shape[0], :m.shape[1]] = m
    return padded.reshape(nq, bins, nk, bins).max(axis=(1, 3)), bins  # (nq, nk)


class AttentionWidget(anywidget.AnyWidget):
    """The trace's attention in a notebook, with the (stream, layer, head) selection synced with Python."""

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    stream = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)  # model layer index
    head = traitlets.Int(0).tag(sync=True)  # model head index
    meta = traitlets.Dict().tag(sync=True)  # per stream: layers, heads, labels, statistics, causal, thumb size
    thumbs = traitlets.Bytes(b"").tag(sync=True)  # uint8 (L, H, t, t) of the current stream
    head_map = traitlets.Bytes(b"").tag(sync=True)  # float32 (nq, nk) of the selected head, row-major
    map_shape = traitlets.List(traitlets.Int(), default_value=[0, 0]).tag(sync=True)
    map_bins = traitlets.Int(1).tag(sync=True)  # > 1: the map is max-pooled over bins × bins tokens

    def __init__(self, trace, stream: str | None = None, layer: int | None = None, head: int | None = None):
        from ..server.payload import head_summary

        streams = [s for s in trace.streams if trace.has("weights", s)]
        if not streams:
            raise InputError("the widget needs full attention maps; capture with mode='full' (this trace holds "
                             "only statistics or top-k)")
        self._trace = trace
        meta = {"model": trace.model_id or "", "streams": {}}
        for s in streams:
            from ..analysis._common import token_labels

            summary = head_summary(trace, s)
            meta["streams"][s] = {
                "layers": list(trace.layers[s]), "heads": list(trace.heads[s]),
                "query_labels": token_labels(trace, s, "query"), "key_labels": token_labels(trace, s, "key"),
                "causal": bool(trace.meta.get("causal", {}).get(s, False)),
                "stats": {k: [[round(float(v), 5) for v in row] for row in summary[k]] for k in STATS},
            }
        s0 = stream if stream is not None else streams[0]
        if s0 not in meta["streams"]:
            raise InputError(f"stream {s0!r} has no maps in this trace; its streams with maps: {', '.join(streams)}")
        super().__init__(meta=meta)
        with self.hold_trait_notifications():
            self.stream = s0
            self.layer = self._layers()[0] if layer is None else layer
            self.head = self._heads()[0] if head is None else head
        self._send_thumbs()
        self._send_map()

    # ------------------------------------------------------------------ selection
    def _layers(self, stream: str | None = None) -> list[int]:
        return self.meta["streams"][stream or self.stream]["layers"]

    def _heads(self, stream: str | None = None) -> list[int]:
        return self.meta["streams"][stream or self.stream]["heads"]

    @traitlets.validate("stream")
    def _check_stream(self, proposal):
        s = proposal["value"]
        if s not in self.meta.get("streams", {}):
            raise traitlets.TraitError(f"stream {s!r} is not in this view; its streams: "
                                       f"{', '.join(self.meta.get('streams', {}))}")
        return s

    @traitlets.validate("layer")
    def _check_layer(self, proposal):
        v = proposal["value"]
        if self.stream and v not in self._layers():
            raise traitlets.TraitError(f"layer {v} is not in this trace; it holds layers {self._layers()}")
        return v

    @traitlets.validate("head")
    def _check_head(self, proposal):
        v = proposal["value"]
        if self.stream and v not in self._heads():
            raise traitlets.TraitError(f"head {v} is not in this trace; it holds heads {self._heads()}")
        return v

    @traitlets.observe("stream")
    def _on_stream(self, change):
        if not hasattr(self, "_trace"):
            return
        with self.hold_trait_notifications():
            if self.layer not in self._layers():
                self.layer = self._layers()[0]
            if self.head not in self._heads():
                self.head = self._heads()[0]
        self._send_thumbs()
        self._send_map()

    @traitlets.observe("layer", "head")
    def _on_selection(self, change):
        if hasattr(self, "_trace"):
            self._send_map()

    def select(self, layer: int | None = None, head: int | None = None, stream: str | None = None) -> None:
        """Set the selection from Python (the view follows); indices are model layer/head indices."""
        for name, v in (("layer", layer), ("head", head)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
                raise InputError(f"{name} must be an int (a model {name} index), got {type(v).__name__}")
        with self.hold_sync():
            if stream is not None:
                self.stream = stream
            if layer is not None:
                self.layer = int(layer)
            if head is not None:
                self.head = int(head)

    @property
    def selection(self) -> tuple[str, int, int]:
        """(stream, layer, head) selected now, in the view or from Python."""
        return self.stream, self.layer, self.head

    def selected_map(self) -> np.ndarray:
        """The selected head's full map (query, key), float32, from the trace (not pooled)."""
        return self._trace.head(self.layer, self.head, self.stream).numpy().astype(np.float32)

    # ------------------------------------------------------------------ data sent to the view
    def _send_thumbs(self) -> None:
        from ..server.payload import overview

        t = overview(self._trace, self.stream)  # (L, H, t, t) uint8
        info = dict(self.meta["streams"][self.stream], thumb=int(t.shape[-1]))
        self.meta = {**self.meta, "streams": {**self.meta["streams"], self.stream: info}}
        self.thumbs = np.ascontiguousarray(t, dtype=np.uint8).tobytes()

    def _send_map(self) -> None:
        m, bins = _pool_max(self.selected_map(), MAX_MAP_TOKENS)
        with self.hold_sync():
            self.map_bins = bins
            self.map_shape = [int(m.shape[0]), int(m.shape[1])]
            self.head_map = np.ascontiguousarray(m, dtype="<f4").tobytes()


def widget(trace, stream: str | None = None, layer: int | None = None, head: int | None = None) -> AttentionWidget:
    """``AttentionWidget(trace, …)``: the linked notebook view (needs ``pip install 'attnscope[notebook]'``)."""
    return AttentionWidget(trace, stream, layer, head)
