"""Dialogue: utterance × utterance attention for a chat-template conversation.

The conversation is rendered with the tokenizer's own chat template (e.g. SmolLM2's ChatML), every
token is mapped to the turn whose character span holds it (offsets from the fast tokenizer), and the
token-level attention of each layer is pooled into a (turn, turn) matrix: entry (i, j) is the mean,
over heads and over the tokens of turn i, of the attention mass those tokens put on turn j. Causal
attention makes it lower-triangular; row i shows which earlier turns turn i reads. Because the first
token is an attention sink in most LMs (Xiao et al. 2023), its mass is left out by default and the
rows renormalised; ``sink_share`` keeps it. A template's implicit preamble (SmolLM2 adds a default
system prompt) becomes its own turn.
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

    def summary(self) -> dict[str, Any]:
        return {"turns": [{"role": t.role, "content": t.content[:80], "implicit": t.implicit} for t in self.turns],
                "layers": self.layers,
                "reads_mean_over_layers": {i: [(j, round(s, 3)) for j, s in self.reads(i)] for i in range(1, len(self.turns))},
                "previous_turn_share": {l: [round(float(x), 3) for x in row] for l, row in
                                        zip(self.layers, self.previous_turn_share())}}


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
    return DialogueAttention(turns, trace.layers["self"], values, sink_share, token_turn, text, trace,
                             meta={"exclude_sink": exclude_sink})
