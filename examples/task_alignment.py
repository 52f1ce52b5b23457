"""Cross-attention alignment, offline:

1. Whisper tiny.en (packaged) on speech synthesised with espeak-ng (words separated by known silences):
   word timestamps by DTW over the alignment heads, compared with the true boundaries, and every
   head scored against them.
2. A text encoder-decoder: a tiny random-init Marian (mechanics only); pass a hub id such as
   Helsinki-NLP/opus-mt-en-de to see real alignments.

    python examples/task_alignment.py [MARIAN_OR_T5_MODEL] [--small]

--small skips the search for alignment heads (scoring every Whisper head against the true boundaries).
"""

import sys
from pathlib import Path

import torch
import transformers as tf

from attnscope.models import load_model, wrap_model
from attnscope.tasks import plots
from attnscope.tasks.alignment import align, best_heads, score_heads
from attnscope.tasks.whisper_timestamps import (alignment_heads, compare_boundaries, espeak_available,
                                                find_alignment_heads, synthesize_words, word_timestamps)

out = Path("attnscope-out/task_alignment")
small = "--small" in sys.argv
args = [a for a in sys.argv[1:] if not a.startswith("--")]
if espeak_available():
    words = "the quick brown fox jumps over the lazy dog".split()
    audio, sr, ref = synthesize_words(words, gaps=[0.25, 0.4, 0.3, 0.35, 0.25, 0.3, 0.4, 0.3])
    whisper = load_model("whisper-tiny-en")
    res = word_timestamps(whisper, audio, sr)  # transcribes, then aligns
    print("transcript:", res.text)
    for w in res.words:
        print(f"  {w.start:5.2f}-{w.end:5.2f} {w.word}")
    c = compare_boundaries(res.words, ref)
    print(f"matched {c['matched']}/{c['of']}; start MAE {c['start_mae']:.3f} s; boundary error to the silent gap "
          f"{c['boundary_mae']:.3f} s")
    plots.plot_word_timestamps(audio, sr, res.words, ref, out / "whisper_words.png")
    plots.plot_alignment(res.alignment, out / "whisper_alignment.png", words=res.words)
    if not small:
        hs, _ = find_alignment_heads(whisper, audio, ref, sr)
        print("heads by mass on the true word frames:", best_heads(hs, "reference_mass", k=8))
        plots.plot_head_scores(hs, out / "whisper_heads.png", "reference_mass", mark=alignment_heads(whisper))
else:
    print("espeak-ng not installed (apt-get install -y espeak-ng): skipping the Whisper part")

if args:
    lm = load_model(args[0])
else:
    tok = load_model("minilm").tokenizer
    torch.manual_seed(0)
    lm = wrap_model(tf.MarianMTModel(tf.MarianConfig(vocab_size=tok.vocab_size, d_model=32, encoder_layers=2,
                                                     decoder_layers=2, encoder_attention_heads=4,
                                                     decoder_attention_heads=4, encoder_ffn_dim=64,
                                                     decoder_ffn_dim=64, decoder_start_token_id=0, pad_token_id=0)),
                    tok, name="tiny-random-marian")
trace, al = align(lm, "the cat sat on the mat", target="die Katze saß auf der Matte")
print("hard alignment:", [(al.target_labels[t], al.source_labels[s]) for t, s in al.hard()])
hs = score_heads(trace)
print("most diagonal heads:", best_heads(hs, "diagonality", k=3))
plots.plot_alignment(al, out / "text_alignment.png")
print("figures in", out)
