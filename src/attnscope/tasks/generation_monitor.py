"""Generation monitor for causal LMs: what the attention does at each generated token, and how sure the model is.

Built on :func:`attnscope.capture.generation.generate` (KV cache on, greedy or sampling): the attention
row that *produced* generated token t is the row of the query at position ``prompt_length − 1 + t``.
For each generated token it reports, per layer (mean over heads): the row entropy (nats), the max weight,
the mass on the prompt vs on text generated so far, the mass on the first token (the "attention sink",
Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks"), and the model's own
probability of the chosen token; steps below ``threshold`` are flagged as low-confidence (the signal
used by e.g. Manakul et al. 2023, SelfCheckGPT, and Varshney et al. 2023 to catch unreliable spans).
With sampling the probability is that of the sampling distribution (after temperature/top-p).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..models import LoadedModel


@dataclass
class GenerationMonitor:
    prompt: str
    text: str
    tokens: list[str]  # generated tokens (decoded one by one)
    token_ids: list[int]
    prompt_length: int
    layers: list[int]
    entropy: np.ndarray  # (token, layer), nats, mean over heads
    max_weight_layers: np.ndarray  # (token, layer)
    prompt_mass_layers: np.ndarray  # (token, layer), includes the first token
    generated_mass_layers: np.ndarray  # (token, layer)
    sink_mass_layers: np.ndarray  # (token, layer)
    confidence: np.ndarray  # (token,) p(chosen token)
    next_token_entropy: np.ndarray  # (token,) entropy of the next-token distribution (nats)
    key_lengths: np.ndarray  # (token,) keys visible to the producing query
    threshold: float
    do_sample: bool
    trace: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def max_weight(self) -> np.ndarray:
        return self.max_weight_layers.mean(1)

    @property
    def prompt_mass(self) -> np.ndarray:
        return self.prompt_mass_layers.mean(1)

    @property
    def generated_mass(self) -> np.ndarray:
        return self.generated_mass_layers.mean(1)

    @property
    def sink_mass(self) -> np.ndarray:
        return self.sink_mass_layers.mean(1)

    @property
    def low_confidence(self) -> np.ndarray:
        return self.confidence < self.threshold

    def flagged(self) -> list[dict[str, Any]]:
        """The low-confidence steps: step, token, confidence, next-token entropy, mean attention entropy."""
        return [{"step": int(i), "token": self.tokens[i], "confidence": round(float(self.confidence[i]), 4),
                 "next_token_entropy": round(float(self.next_token_entropy[i]), 3),
                 "attention_entropy": round(float(self.entropy[i].mean()), 3),
                 "prompt_mass": round(float(self.prompt_mass[i]), 3)}
                for i in np.flatnonzero(self.low_confidence)]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per generated token (for tables / JSON)."""
        return [{"step": i, "token": t, "confidence": float(self.confidence[i]),
                 "attention_entropy": float(self.entropy[i].mean()), "max_weight": float(self.max_weight[i]),
                 "prompt_mass": float(self.prompt_mass[i]), "generated_mass": float(self.generated_mass[i]),
                 "sink_mass": float(self.sink_mass[i]), "low_confidence": bool(self.low_confidence[i])}
                for i, t in enumerate(self.tokens)]

    def summary(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "generated_tokens": len(self.tokens),
                "do_sample": self.do_sample, "threshold": self.threshold,
                "mean_confidence": float(self.confidence.mean()) if len(self.tokens) else float("nan"),
                "flagged": self.flagged(), "mean_sink_mass": float(self.sink_mass.mean()),
                "mean_prompt_mass": float(self.prompt_mass.mean())}


def step_metrics(weights: np.ndarray, prompt_length: int, n_generated: int) -> dict[str, np.ndarray]:
    """Per generated token, per layer (mean over heads) metrics from a square causal trace's maps.

    weights: (layer, head, N, N) with N >= prompt_length + n_generated - 1. Row ``prompt_length − 1 + t``
    produced generated token t; its keys are positions 0..that row.
    """
    out = {k: np.zeros((n_generated, weights.shape[0])) for k in
           ("entropy", "max_weight", "prompt_mass", "generated_mass", "sink_mass")}
    keys = np.zeros(n_generated, dtype=int)
    for t in range(n_generated):
        r = prompt_length - 1 + t
        row = weights[:, :, r, : r + 1]  # (L, H, r+1)
        keys[t] = r + 1
        ent = -(row * np.log(np.where(row > 0, row, 1.0))).sum(-1)  # (L, H)
        out["entropy"][t] = ent.mean(1)
        out["max_weight"][t] = row.max(-1).mean(1)
        out["prompt_mass"][t] = row[..., :prompt_length].sum(-1).mean(1)
        out["generated_mass"][t] = row[..., prompt_length:].sum(-1).mean(1)
        out["sink_mass"][t] = row[..., 0].mean(1)
    out["key_lengths"] = keys
    return out


def monitor_generation(lm: LoadedModel | str, prompt: str | list[dict], *, max_new_tokens: int = 32,
                       do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = 0,
                       chat: bool = False, threshold: float = 0.3, layers=None, heads=None) -> GenerationMonitor:
    """Generate from ``prompt`` (KV cache on; greedy or sampling) and measure every step's attention and
    confidence. ``chat=True`` (or a list of messages) applies the tokenizer's chat template."""
    from ..capture.generation import generate
    from ..models import load_model

    if isinstance(lm, str):
        lm = load_model(lm)
    if lm.kind != "causal":
        raise InputError(f"{lm.name} is a {lm.kind} model; the generation monitor is for decoder-only LMs")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold is a probability in [0, 1], got {threshold}")
    res = generate(lm, prompt, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                   top_p=top_p, seed=seed, chat=chat, mode="full", layers=layers, heads=heads)
    tr = res.trace
    n = len(res.token_ids)
    w = tr.weights("self").double().numpy()  # (L, H, N, N)
    m = step_metrics(w, res.prompt_length, n)
    tokens = [lm.tokenizer.decode([t]) for t in res.token_ids]
    return GenerationMonitor(
        prompt=tr.texts.get("input", prompt if isinstance(prompt, str) else ""), text=res.text, tokens=tokens,
        token_ids=list(res.token_ids), prompt_length=res.prompt_length, layers=tr.layers["self"], entropy=m["entropy"],
        max_weight_layers=m["max_weight"], prompt_mass_layers=m["prompt_mass"],
        generated_mass_layers=m["generated_mass"], sink_mass_layers=m["sink_mass"],
        confidence=np.array(res.token_probs[:n], dtype=float), next_token_entropy=np.array(res.step_entropies[:n]),
        key_lengths=m["key_lengths"], threshold=threshold, do_sample=do_sample, trace=tr,
        meta={"temperature": temperature, "top_p": top_p, "seed": seed, "chat": chat or isinstance(prompt, list)})
