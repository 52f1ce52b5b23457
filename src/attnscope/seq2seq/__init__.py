"""Classic attention, trained here: Bahdanau (2015) and Luong (2015) attention in a GRU encoder-decoder,
multi-head self-attention (Vaswani et al. 2017), generated tasks with real alignment structure,
training, evaluation, experiments, and export to :class:`attnscope.AttentionTrace`.

Heavy parts (training, plots) are imported lazily from their modules.
"""

from .attention import (
    ATTENTION_KINDS,
    BahdanauAttention,
    LuongAttention,
    MultiHeadAttention,
    MultiHeadSelfAttention,
    masked_softmax,
)
from .data import Pair, Vocab, generate_dates, generate_svo_sov, load_tsv
from .decode import Hypothesis, beam_search, greedy_decode
from .model import Seq2Seq, Seq2SeqConfig

__all__ = [
    "ATTENTION_KINDS", "BahdanauAttention", "LuongAttention", "MultiHeadAttention", "MultiHeadSelfAttention",
    "masked_softmax", "Pair", "Vocab", "generate_dates", "generate_svo_sov", "load_tsv", "Hypothesis",
    "beam_search", "greedy_decode", "Seq2Seq", "Seq2SeqConfig",
]
