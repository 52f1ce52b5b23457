"""Dialogue: utterance × utterance attention for a chat-template conversation.

The conversation is rendered with the tokenizer's own chat template (e.g. SmolLM2's ChatML), every
token is mapped to the turn whose character span holds it (offsets from the fast tokenizer), and the
token-level attention of each layer is pooled into a (turn, turn) matrix: entry (i, j) is the mean,
over heads and over the tokens of turn i, of the attention mass those tokens put on turn j. Causal
attention makes it lower-triangular; row i shows which earlier turns turn i reads. Because the first
token is an attention sink in most LMs (Xiao et al. 2023), its mass is left out by default and the
rows renormalised; ``sink_share`` keeps it. A template's implicit preamble (SmolLM2 adds a default
system prompt) becomes its own turn.

Coherence (:meth:`DialogueAttention.coherence`): how strongly each turn reads the conversation before it,
relative to a reader without preferences. For turn i and layer l, the *lookback share* o_i is the part of
the turn's attention (mean over its tokens and the heads, sink excluded) that lands on earlier turns — the
turn-level form of Chuang et al. 2024's lookback ratio ("Lookback Lens", attention on the context vs on the
newly written tokens). Raw shares grow with the length of the history, so they are divided by e_i, the
share a token would give to earlier turns if it spread its attention uniformly over every key it may see
(sink excluded likewise), averaged over the turn's tokens: ``lift_i = o_i / e_i``. 1 = reads the history as
much as a uniform reader; < 1 = stays inside its own turn (the usual local bias); > 1 = reaches back more
than position alone would give. The conversation's score per layer is the mean lift over turns 1..T−1. It
describes where attention goes — not whether the dialogue is good, nor which turn is relevant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..models import LoadedModel


@dataclass
class Turn:
    role: str
    content: str
    start: int  # character span of the whole templated turn (header + content + end marker)
    end: int
    implicit: bool = False  # added by the template, not in the messages


@dataclass
class DialogueAttention:
    turns: list[Turn]
    layers: list[int]
    values: np.ndarray  # (layer, turn, turn)
    sink_share: np.ndarray  # (layer, turn): mass on the first token, mean over the turn's tokens and heads
    token_turn: list[int]  # turn of each token (-1: none)
    text: str
    trace: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def matrix(self, layer: int) -> np.ndarray:
        if layer not in self.layers:
            raise InputError(f"layer {layer} is not in this analysis; it holds {self.layers}")
        return self.values[self.layers.index(layer)]

    def previous_turn_share(self) -> np.ndarray:
        """(layer, turn): share of each turn's attention that goes to earlier turns."""
        n = len(self.turns)
        lower = np.tril(np.ones((n, n)), -1)
        return (self.values * lower[None]).sum(-1)

    def reads(self, turn: int, layer: int | None = None) -> list[tuple[int, float]]:
        """Earlier turns that ``turn`` reads, with their share of its attention to earlier turns (mean over
        layers unless one is given), largest first."""
        if not 0 <= turn < len(self.turns):
            raise InputError(f"turn {turn} is out of range 0..{len(self.turns) - 1}")
        m = self.values.mean(0) if layer is None else self.matrix(layer)
        row = m[turn, :turn]
        tot = row.sum()
        return sorted(((j, float(v / tot) if tot > 0 else 0.0) for j, v in enumerate(row)), key=lambda x: -x[1])

    def coherence(self) -> "DialogueCoherence":
        """Lookback share, its uniform-attention expectation and their ratio per turn and layer (module docstring)."""
        n_turns = len(self.turns)
        expected = expected_lookback(self.token_turn, n_turns, self.meta.get("exclude_sink", True))  # (T,)
        observed = self.previous_turn_share()  # (L, T)
        scored = [i for i in range(1, n_turns) if expected[i] > 0]
        lift = np.full_like(observed, np.nan)
        lift[:, scored] = observed[:, scored] / expected[scored]
        score = np.nanmean(lift[:, scored], axis=1) if scored else np.full(len(self.layers), np.nan)
        return DialogueCoherence(list(self.layers), observed, expected, lift, scored, score)

    def summary(self) -> dict[str, Any]:
        return {"turns": [{"role": t.role, "content": t.content[:80], "implicit": t.implicit} for t in self.turns],
                "layers": self.layers,
                "reads_mean_over_layers": {i: [(j, round(s, 3)) for j, s in self.reads(i)] for i in range(1, len(self.turns))},
                "previous_turn_share": {l: [round(float(x), 3) for x in row] for l, row in
                                        zip(self.layers, self.previous_turn_share())},
                "coherence": self.coherence().to_dict()}


@dataclass
class DialogueCoherence:
    """Per turn and layer: lookback share (observed), its uniform-attention expectation and their ratio (lift)."""

    layers: list[int]
    observed: np.ndarray  # (layer, turn): share of the turn's attention on earlier turns
    expected: np.ndarray  # (turn,): the same for uniform attention over the visible keys
    lift: np.ndarray  # (layer, turn): observed / expected; NaN for turn 0 (no history)
    scored: list[int]  # turns with a history
    score: np.ndarray  # (layer,): mean lift over the scored turns

    @property
    def overall(self) -> float:
        """Mean of the per-layer scores."""
        return float(np.nanmean(self.score)) if len(self.score) else float("nan")

    def to_dict(self) -> dict[str, Any]:
        def r(x) -> Any:
            return None if not np.isfinite(x) else round(float(x), 4)

        return {"definition": "lift = lookback share / uniform-attention expectation; score = mean lift over turns "
                              "with a history", "overall": r(self.overall), "scored_turns": self.scored,
                "expected": [r(x) for x in self.expected],
                "score_by_layer": {l: r(v) for l, v in zip(self.layers, self.score)},
                "lift_by_layer": {l: [r(x) for x in row] for l, row in zip(self.layers, self.lift)}}


def expected_lookback(token_turn: Sequence[int], n_turns: int, exclude_sink: bool = True) -> np.ndarray:
    """(turn,): mean over a turn's tokens of the share of earlier-turn tokens among the keys each token may see
    (causal: itself and before; tokens outside every turn and, with ``exclude_sink``, the first token left out)
    — what the lookback share would be if every token attended uniformly."""
    tt = np.asarray(token_turn)
    n = len(tt)
    visible = (tt >= 0).astype(float)  # (N,)
    if exclude_sink and n:
        visible[0] = 0.0
    out = np.zeros(n_turns)
    for i in range(n_turns):
        rows = np.flatnonzero(tt == i)
        if not len(rows):
            continue
        earlier = np.cumsum(visible * ((tt >= 0) & (tt < i)))  # (N,) earlier-turn keys at or before each position
        seen = np.cumsum(visible)  # (N,)
        share = np.divide(earlier[rows], seen[rows], out=np.zeros(len(rows)), where=seen[rows] > 0)
        out[i] = share.mean()
    return out


def _render(tok, messages, add_generation_prompt: bool = False) -> str:
    return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_turns(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> tuple[str, list[Turn]]:
    """Render ``messages`` with the chat template and find each turn's character span in the text.

    Turn k ends where the rendering of ``messages[:k+1]`` ends (templates are prefix-consistent); when they
    are not, spans fall back to the message contents. Text before the first message's header that the
    template adds (a default system prompt) becomes an implicit turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{type(tokenizer).__name__} has no chat template; dialogue analysis needs a chat model "
                         "(e.g. smollm2)")
    if not messages:
        raise InputError("no messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m or not str(m["content"]).strip():
            raise InputError(f"message {i} must be a dict with a role and non-empty content, got {m!r}")
    text = _render(tokenizer, messages, add_generation_prompt)
    ends, cstart = [], []
    cursor = 0
    for k, m in enumerate(messages):
        c = text.find(m["content"], cursor)
        if c < 0:
            raise InputError(f"message {k}'s content is not in the rendered chat text; the template changes it")
        cstart.append(c)
        cursor = c + len(m["content"])
        prefix = _render(tokenizer, messages[: k + 1])
        ends.append(len(prefix) if text.startswith(prefix) else cursor)
    starts = [0] + ends[:-1]
    turns = [Turn(m["role"], m["content"], s, e) for m, s, e in zip(messages, starts, ends)]
    # an implicit preamble: the text before message 0's header, the header guessed from a later turn's
    if len(messages) > 1:
        header1 = text[ends[0]:cstart[1]]
        header0 = header1.replace(messages[1]["role"], messages[0]["role"], 1)
        pre = text[:cstart[0]]
        if header0 and pre.endswith(header0) and pre[: -len(header0)].strip():
            cut = len(pre) - len(header0)
            turns[0] = Turn(messages[0]["role"], messages[0]["content"], cut, ends[0])
            turns.insert(0, Turn("system (template)", pre[:cut], 0, cut, implicit=True))
    if add_generation_prompt and len(text) > ends[-1]:
        turns.append(Turn("assistant (prompt)", "", ends[-1], len(text), implicit=True))
    return text, turns


def dialogue_attention(lm: LoadedModel | str, messages: Sequence[dict], *, layers=None, heads=None,
                       exclude_sink: bool = True, add_generation_prompt: bool = False,
                       method: str = "fast") -> DialogueAttention:
    """Turn × turn attention per layer for a conversation (list of {"role", "content"} messages)."""
    from ..capture import capture
    from ..models import load_model

    if isinstance(lm, str):
        lm = load_model(lm)
    if lm.kind != "causal":
        raise InputError(f"{lm.name} is a {lm.kind} model; dialogue analysis needs a chat (decoder-only) model")
    text, turns = chat_turns(lm.tokenizer, messages, add_generation_prompt)
    trace = capture(lm, text, mode="full", layers=layers, heads=heads, method=method)
    toks = trace.tokens["input"]
    token_turn = []
    for (s, e) in toks.offsets:
        k = next((i for i, t in enumerate(turns) if t.start <= s < t.end), -1) if e > s else -1
        token_turn.append(k)
    w = trace.weights("self").double().numpy().mean(1)  # (L, N, N): head mean
    values, sink_share = pool_turns(w, token_turn, turns, exclude_sink)
    return DialogueAttention(turns, trace.layers["self"], values, sink_share, token_turn, text, trace,
                             meta={"exclude_sink": exclude_sink})


def pool_turns(w: np.ndarray, token_turn: Sequence[int], turns: Sequence[Turn],
               exclude_sink: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Token attention (L, N, N) → ((L, T, T) turn × turn matrices, (L, T) sink share): entry (i, j) is the mean
    over turn i's tokens of their mass on turn j's tokens; with ``exclude_sink`` the first token's mass is
    removed and rows renormalised first."""
    n_turns = len(turns)
    tt = np.array(token_turn)
    if exclude_sink:
        sink = w[:, :, 0].copy()  # (L, N)
        w = w.copy()
        w[:, :, 0] = 0.0
        s = w.sum(-1, keepdims=True)
        w = w / np.where(s > 0, s, 1.0)
    else:
        sink = w[:, :, 0]
    onehot = np.zeros((len(tt), n_turns))
    ok = tt >= 0
    onehot[np.flatnonzero(ok), tt[ok]] = 1.0  # (N, T)
    counts = onehot.sum(0)
    if (counts == 0).any():
        empty = [turns[i].role for i in np.flatnonzero(counts == 0)]
        raise InputError(f"turns {empty} have no tokens; is the text truncated?")
    to_turn = w @ onehot  # (L, N, T): each token's mass on each turn
    values = np.einsum("nt,lnk->ltk", onehot, to_turn) / counts[None, :, None]  # (L, T, T)
    sink_share = (sink @ onehot) / counts[None]  # (L, T)
    return values, sink_share
