"""Classic attention, trained here: Bahdanau (2015) and Luong (2015) attention in a GRU encoder-decoder,
multi-head self-attention (Vaswani et al. 2017), generated tasks with real alignment structure,
training, evaluation, experiments, and export to :class:`attnscope.AttentionTrace`.

Heavy parts (training, plots) are imported lazily from their modules.
"""

from .._lazy import lazy_exports

# Imported on first use (torch behind them), so `attnscope seq2seq --help` stays fast.
_EXPORTS = {
    **dict.fromkeys(["ATTENTION_KINDS", "BahdanauAttention", "LuongAttention", "MultiHeadAttention",
                     "MultiHeadSelfAttention", "masked_softmax"], ".attention"),
    **dict.fromkeys(["Pair", "Vocab", "generate_dates", "generate_svo_sov", "load_tsv"], ".data"),
    **dict.fromkeys(["Hypothesis", "beam_search", "greedy_decode"], ".decode"),
    **dict.fromkeys(["Seq2Seq", "Seq2SeqConfig"], ".model"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ATTENTION_KINDS", "BahdanauAttention", "LuongAttention", "MultiHeadAttention", "MultiHeadSelfAttention",
    "masked_softmax", "Pair", "Vocab", "generate_dates", "generate_svo_sov", "load_tsv", "Hypothesis",
    "beam_search", "greedy_decode", "Seq2Seq", "Seq2SeqConfig",
]
