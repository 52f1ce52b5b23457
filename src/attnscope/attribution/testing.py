"""Tiny random-init models for tests and examples (built from configs; nothing downloads)."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

from ..models import CATALOGUE, LoadedModel, wrap_model

ARCHS = ("bert", "gpt2", "llama")


@lru_cache(maxsize=1)
def minilm_tokenizer():
    """The packaged MiniLM (BERT WordPiece) tokenizer, reused by every tiny model."""
    from transformers import AutoTokenizer

    d = CATALOGUE["minilm"].model_dir()
    if d is None:
        raise RuntimeError(f"tiny models borrow MiniLM's tokenizer: {CATALOGUE['minilm'].install_hint()}")
    return AutoTokenizer.from_pretrained(str(d))


def tiny_model(arch: str = "bert", task: str = "classify", num_labels: int = 3, seed: int = 0,
               dropout: float = 0.0, layers: int = 2, heads: int = 4) -> LoadedModel:
    """A tiny random-init ``arch`` (bert, gpt2, llama with grouped-query attention) with a sequence
    classification head (``task="classify"``) or an LM head (``task="lm"``), in eval mode."""
    import transformers as tf

    tok = minilm_tokenizer()
    vocab = len(tok)
    common = dict(vocab_size=vocab, num_labels=num_labels, pad_token_id=tok.pad_token_id,
                  bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, initializer_range=0.2)
    if arch == "bert":
        cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=dropout,
                            attention_probs_dropout_prob=dropout, **common)
        cls = tf.BertForSequenceClassification if task == "classify" else tf.BertForMaskedLM
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=layers, n_head=heads, n_positions=128, resid_pdrop=dropout,
                            embd_pdrop=dropout, attn_pdrop=dropout, **common)
        cls = tf.GPT2ForSequenceClassification if task == "classify" else tf.GPT2LMHeadModel
    elif arch == "llama":
        cfg = tf.LlamaConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
                             num_key_value_heads=max(1, heads // 2), intermediate_size=64,
                             max_position_embeddings=128, attention_dropout=dropout, **common)
        cls = tf.LlamaForSequenceClassification if task == "classify" else tf.LlamaForCausalLM
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; valid: {', '.join(ARCHS)}")
    if arch != "bert":  # as their own tokenizers: no token_type_ids (GPT-2 would embed them with wte a second time)
        tok = copy.deepcopy(tok)
        tok.model_input_names = ["input_ids", "attention_mask"]
    torch.manual_seed(seed)
    model = cls._from_config(cfg, attn_implementation="sdpa")
    kind = "causal" if task == "lm" and arch != "bert" else "encoder"
    return wrap_model(model, tok, name=f"tiny-{arch}-{task}", kind=kind)
