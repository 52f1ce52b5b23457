"""Question answering attention. Offline, no QA model is packaged: by default this builds a *tiny random-init*
BertForQuestionAnswering (the mechanics only — its answers are arbitrary). Pass a real SQuAD model's hub id or
local directory to see real behaviour:

    python examples/task_qa.py [MODEL] [--small]

(--small is accepted for uniformity with the other examples; this one is always quick.)
"""

import sys
from pathlib import Path

import torch
import transformers as tf

from attnscope.models import load_model, wrap_model
from attnscope.tasks import plots
from attnscope.tasks.qa import answer_question

args = [a for a in sys.argv[1:] if not a.startswith("--")]
if args:
    lm = load_model(args[0], model_class=tf.AutoModelForQuestionAnswering)
else:
    tok = load_model("minilm").tokenizer
    torch.manual_seed(0)
    lm = wrap_model(tf.BertForQuestionAnswering(tf.BertConfig(vocab_size=tok.vocab_size, hidden_size=64,
                                                              num_hidden_layers=4, num_attention_heads=4,
                                                              intermediate_size=128)), tok, name="tiny-random-qa")
r = answer_question(lm, "Where is the Eiffel Tower?",
                    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, built in 1889.")
print(f"answer {r.answer!r} (p={r.score:.3f})")
for name, per_layer in r.answer_attention_by_layer().items():
    print(f"{name:>22}: " + " ".join(f"{x:.3f}" for x in per_layer))
print("heads pointing at the answer:", [(h["layer"], h["head"], round(h["question_to_answer"], 3))
                                        for h in r.top_answer_heads(3)])
print("figure:", plots.plot_qa(r, Path("attnscope-out/task_qa/qa.png")))
