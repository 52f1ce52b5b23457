"""Parity on the packaged real models: SmolLM2 (Llama, GQA 9/3) and Whisper tiny.en (all three streams)."""

import numpy as np
import pytest
import torch

from attnscope.capture import capture
from attnscope.capture.generation import generate
from attnscope.models import load_model
from _helpers import assert_traces_close

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


def test_smollm2_fast_equals_eager_and_generates(smollm2):
    text = "Attention heads in small language models often attend to the first token."
    fast = capture(smollm2, text, layers=[0, 15, 29], mode=["full", "stats"], full_dtype=torch.float32)
    eager = capture(smollm2, text, layers=[0, 15, 29], mode=["full", "stats"], full_dtype=torch.float32,
                    method="eager")
    assert fast.weights().shape[1] == 9  # query heads; 3 key/value heads expanded correctly
    assert_traces_close(fast, eager, atol=1e-5)
    stats_only = capture(smollm2, text, mode="stats", statistics="all")  # fused path: GQA, causal key limits
    eager_all = capture(smollm2, text, mode="stats", statistics="all", method="eager")
    eager_maps = capture(smollm2, text, mode="full", full_dtype=torch.float32, method="eager")
    # counts against the eager maps: a weight within rounding of a threshold may round either way
    assert_traces_close(stats_only, eager_all, atol=5e-5, rtol=1e-5, probs=eager_maps)
    r = generate(smollm2, "What is the capital of France?", chat=True, max_new_tokens=8, layers=[0, 29],
                 mode="stats")
    assert "Paris" in r.text
    n = len(r.trace.tokens["input"])
    assert r.trace.row_stats()["entropy"].shape == (2, 9, n)


def test_whisper_tiny_en_three_streams():
    lm = load_model("whisper-tiny-en")
    t = np.arange(16000 * 2) / 16000
    audio = (0.1 * np.sin(2 * np.pi * 220 * t) * (t % 0.5 < 0.25)).astype(np.float32)  # 2 s of beeps
    fast = capture(lm, audio=audio, target=" Hello world.", full_dtype=torch.float32)
    eager = capture(lm, audio=audio, target=" Hello world.", full_dtype=torch.float32, method="eager")
    assert fast.streams == ["encoder_self", "decoder_self", "cross"]
    assert fast.weights("cross").shape[-1] == 1500 and fast.weights("encoder_self").shape[1] == 6
    assert_traces_close(fast, eager, atol=1e-5)
    stats_only = capture(lm, audio=audio, target=" Hello world.", mode="stats")  # fused path, three streams
    eager_stats = capture(lm, audio=audio, target=" Hello world.", mode="stats", method="eager")
    # counts against the eager maps: a weight within rounding of a threshold may round either way
    assert_traces_close(stats_only, eager_stats, atol=5e-5, rtol=1e-5, probs=eager)
