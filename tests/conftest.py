"""Shared fixtures: the packaged MiniLM and tiny random-init models of every family built from configs."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: N worker processes share the cores, one torch thread each
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def minilm():
    from attnscope.models import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def bert_tokenizer(minilm):
    return minilm.tokenizer


def build_tiny(family: str, tokenizer):
    """A tiny random-init model of a family, wrapped for capture (deterministic weights)."""
    import transformers as tf

    from attnscope.models import wrap_model

    V = tokenizer.vocab_size
    specs = {
        "bert": (tf.BertConfig, tf.BertModel, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   intermediate_size=37)),
        "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel, dict(n_embd=32, n_layer=2, n_head=4, bos_token_id=101,
                                                         eos_token_id=102)),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                            num_key_value_heads=2, intermediate_size=37)),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM, dict(hidden_size=32, num_hidden_layers=2,
                                                                  num_attention_heads=4, num_key_value_heads=1,
                                                                  intermediate_size=37, sliding_window=4)),
        "t5": (tf.T5Config, tf.T5ForConditionalGeneration, dict(d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                                                 num_heads=4, decoder_start_token_id=0,
                                                                 pad_token_id=0)),
        "marian": (tf.MarianConfig, tf.MarianMTModel, dict(d_model=32, encoder_layers=2, decoder_layers=2,
                                                            encoder_attention_heads=4, decoder_attention_heads=4,
                                                            encoder_ffn_dim=37, decoder_ffn_dim=37,
                                                            decoder_start_token_id=0, pad_token_id=0)),
    }
    cfg_cls, model_cls, kw = specs[family]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_cls(cfg_cls(vocab_size=V, **kw))
    return wrap_model(model, tokenizer, name=f"tiny-{family}")


@pytest.fixture(scope="session")
def tiny(bert_tokenizer):
    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny(family, bert_tokenizer)
        return cache[family]

    return get
