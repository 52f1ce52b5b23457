"""The public capture API: token-id input (checked against transformers' eager attention computed here),
one-line errors for misuse, and the curated top level."""

import subprocess
import sys

import pytest
import torch

import attnscope
from attnscope import InputError, capture, capture_batch, generate
from attnscope.capture.api import attention_implementation


def _eager_reference(model, ids, **extra):
    """transformers' own eager attention for these ids: stream -> (layer, head, Nq, Nk) float32."""
    with attention_implementation(model, "eager"), torch.no_grad():
        x = torch.tensor([ids])  # (1, N)
        out = model(input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True, **extra)
    if getattr(out, "encoder_attentions", None) is not None:
        return {"encoder_self": torch.stack(out.encoder_attentions)[:, 0].float(),
                "decoder_self": torch.stack(out.decoder_attentions)[:, 0].float(),
                "cross": torch.stack(out.cross_attentions)[:, 0].float()}
    return {"self": torch.stack(out.attentions)[:, 0].float()}  # (L, H, N, N)


IDS = [101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102]  # "[CLS] the cat sat on the mat . [SEP]" (MiniLM vocab)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "mistral"])
@pytest.mark.parametrize("form", ["list", "tensor1d", "tensor2d"])
def test_input_ids_equal_transformers_eager(tiny, family, form):
    lm = tiny(family)
    given = {"list": IDS, "tensor1d": torch.tensor(IDS), "tensor2d": torch.tensor([IDS])}[form]
    t = capture(lm, input_ids=given, full_dtype=torch.float32)
    ref = _eager_reference(lm.model, IDS)
    torch.testing.assert_close(t.weights(), ref["self"], atol=1e-5, rtol=0)
    toks = t.tokens["input"]
    assert toks.ids == IDS and len(toks) == len(IDS)
    assert toks.text == lm.tokenizer.convert_ids_to_tokens(IDS)  # labelled from the ids, no offsets
    assert toks.labels() == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]
    assert toks.special == [True] + [False] * 7 + [True]
    assert t.meta["from_ids"] is True


def test_input_ids_seq2seq_source(tiny):
    lm = tiny("t5")
    t = capture(lm, input_ids=IDS[1:], target="the cat", full_dtype=torch.float32)
    dec = torch.tensor([t.tokens["target"].ids])  # (1, T): the teacher-forced decoder input
    ref = _eager_reference(lm.model, IDS[1:], decoder_input_ids=dec)
    for s in ("encoder_self", "decoder_self", "cross"):
        torch.testing.assert_close(t.weights(s), ref[s], atol=1e-5, rtol=0)
    assert t.tokens["source"].ids == IDS[1:]


def test_input_ids_same_trace_as_text(minilm):
    a = capture(minilm, "The cat sat on the mat.", mode=["full", "stats"])
    b = capture(minilm, input_ids=IDS, mode=["full", "stats"])
    assert a.tokens["input"].ids == IDS
    torch.testing.assert_close(a.weights(), b.weights(), atol=0, rtol=0)


def test_capture_batch_input_ids_equal_one_by_one(tiny):
    lm = tiny("gpt2")
    seqs = [IDS, IDS[2:6], torch.tensor(IDS[:4])]
    batch = capture_batch(lm, input_ids=seqs, mode="full", full_dtype=torch.float32, batch_size=2)
    for t, ids in zip(batch, [IDS, IDS[2:6], IDS[:4]]):
        ref = _eager_reference(lm.model, ids)
        torch.testing.assert_close(t.weights(), ref["self"], atol=1e-5, rtol=0)
        assert t.tokens["input"].ids == ids
    with pytest.raises(InputError, match="list of sequences"):
        capture_batch(lm, input_ids=IDS)
    with pytest.raises(InputError, match="not both"):
        capture_batch(lm, ["a b"], input_ids=[IDS])


@pytest.mark.parametrize("family", ["llama", "marian"])
def test_generate_from_input_ids_equals_text_prompt(tiny, family):
    lm = tiny(family)
    prompt = "the quick brown fox"
    ids = lm.tokenizer(prompt)["input_ids"]
    a = generate(lm, prompt, max_new_tokens=4, full_dtype=torch.float32)
    b = generate(lm, input_ids=ids, max_new_tokens=4, full_dtype=torch.float32)
    assert a.token_ids == b.token_ids
    for s in a.trace.streams:
        torch.testing.assert_close(a.trace.weights(s), b.trace.weights(s), atol=0, rtol=0)
    if lm.kind == "causal":  # and the whole causal trace equals transformers' eager over prompt + continuation
        full = a.trace.tokens["input"].ids
        torch.testing.assert_close(b.trace.weights(), _eager_reference(lm.model, full)["self"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad, match", [
    ({"input_ids": []}, "empty"),
    ({"input_ids": [101, 2.5]}, r"input_ids\[1\] is 2.5"),
    ({"input_ids": [101, True]}, "must be ints"),
    ({"input_ids": [101, 10 ** 9]}, r"not a token id of .* 0\.\.30521"),
    ({"input_ids": [-1]}, "not a token id"),
    ({"input_ids": torch.tensor([[1, 2], [3, 4]])}, "one sequence"),
    ({"input_ids": torch.tensor([1.0, 2.0])}, "integer token ids"),
    ({"input_ids": "the cat"}, "pass text as the text argument"),
    ({"input_ids": list(range(100, 700))}, "at most 512.*truncate=True"),
    ({"text": "a", "input_ids": [101]}, "not both"),
    ({}, "pass the input"),
])
def test_bad_input_ids_one_line(minilm, bad, match):
    with pytest.raises(InputError, match=match) as e:
        capture(minilm, **bad)
    assert "\n" not in str(e.value)


def test_input_ids_truncate(minilm):
    with pytest.warns(UserWarning, match="truncated"):
        t = capture(minilm, input_ids=[101] + [1996] * 600, truncate=True, mode="stats", layers=[0])
    assert len(t.tokens["input"]) == 512 and t.meta["truncated"]["original_tokens"] == 601


@pytest.mark.parametrize("text", ["\x00\x00\x00", "\u200b\u200b", "\x01\x02\x7f", "\u200b \x00\u2060\t"])
def test_text_without_visible_characters_refused(minilm, text):
    with pytest.raises(InputError, match="no visible character"):
        capture(minilm, text)


def test_text_with_some_control_characters_still_works(minilm):
    t = capture(minilm, "cat\x00\u200b sat", mode="stats", layers=[0])
    assert "cat" in t.tokens["input"].labels()


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": -1, "mode": "topk"}, "top_k must be a positive integer"),
    ({"top_k": 0, "mode": "topk"}, "top_k must be a positive integer"),
    ({"top_k": 2.5}, "top_k must be a positive integer"),
    ({"mode": None}, "mode must be one of full, stats, topk"),
    ({"mode": 3}, "mode must be one of"),
    ({"layers": "0-3"}, "layers must be a list"),
    ({"layers": [99]}, "layer 99 is out of range"),
    ({"heads": [True]}, "head True is out of range"),
    ({"layers": []}, "no layers selected"),
    ({"target": "le chat"}, "target= is for encoder-decoder models.*encoder"),
    ({"audio": [0.0] * 10}, "takes text, not audio"),
])
def test_misuse_gives_attnscope_errors(minilm, kwargs, match):
    with pytest.raises(InputError, match=match):
        capture(minilm, "The cat sat.", **kwargs)


def test_target_refused_for_decoder_only(tiny):
    with pytest.raises(InputError, match="decoder-only model: put the continuation in the text"):
        capture(tiny("gpt2"), "the cat", target="sat")


def test_int_layer_and_head_select_one(minilm):
    t = capture(minilm, "The cat sat.", layers=2, heads=-1, mode="full")
    assert t.layers["self"] == [2] and t.heads["self"] == [11]
    ref = capture(minilm, "The cat sat.", layers=[2], heads=[11], mode="full")
    torch.testing.assert_close(t.weights(), ref.weights(), atol=0, rtol=0)


def test_generate_misuse(tiny):
    lm = tiny("llama")
    with pytest.raises(InputError, match="top_k"):
        generate(lm, "the cat", top_k=0)
    with pytest.raises(InputError, match="chat=True formats a text prompt"):
        generate(lm, input_ids=[101, 1996], chat=True)
    with pytest.raises(InputError, match="not both"):
        generate(lm, "the", input_ids=[101])
    with pytest.raises(InputError, match="max_new_tokens"):
        generate(lm, "the", max_new_tokens=0)


def test_top_level_api_is_curated_and_lazy():
    for name in ("load_model", "capture", "capture_batch", "generate", "AttentionTrace", "Tokens", "run_analysis",
                 "list_analyses", "show", "AttnscopeError", "InputError", "UnknownNameError", "__version__"):
        assert name in attnscope.__all__ and name in dir(attnscope)
        assert getattr(attnscope, name) is not None
    from importlib.metadata import version

    assert attnscope.__version__ == version("attnscope")
    code = ("import sys, attnscope; heavy = [m for m in ('torch', 'transformers', 'matplotlib', 'numpy') "
            "if m in sys.modules]; assert not heavy, heavy; attnscope.__version__; attnscope.InputError; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        attnscope.no_such_name  # noqa: B018


def test_capture_package_is_callable(minilm):
    import attnscope.capture as capture_pkg

    assert attnscope.capture is capture_pkg and callable(capture_pkg)
    a = attnscope.capture(minilm, "The cat sat.", layers=[0], mode="stats")
    b = capture_pkg.capture(minilm, "The cat sat.", layers=[0], mode="stats")
    torch.testing.assert_close(a.row_stats()["entropy"], b.row_stats()["entropy"], atol=0, rtol=0)
    from attnscope.capture import capture as c, generate as g  # noqa: F401 - the README's import works


def test_overlong_text_gives_attnscopes_message_only(minilm):
    """A text longer than the model reads is counted, then truncated with attnscope's warning (or refused):
    transformers' own 'Token indices sequence length is longer…' log line is not printed on top."""
    import logging

    from transformers.utils import logging as tf_logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    tf_logger = tf_logging.get_logger("transformers")
    level = tf_logging.get_verbosity()
    tf_logger.addHandler(handler)
    tf_logging.set_verbosity_warning()
    minilm.tokenizer.deprecation_warnings.clear()  # the tokenizer logs that line once per instance
    try:
        with pytest.warns(UserWarning, match="truncated from 602 to 512"):
            attnscope.capture(minilm, "word " * 600, truncate=True, mode="stats")
    finally:
        tf_logger.removeHandler(handler)
        tf_logging.set_verbosity(level)
    assert not [m for m in seen if "sequence length is longer" in m], seen
