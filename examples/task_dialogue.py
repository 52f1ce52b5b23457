"""Dialogue on the packaged SmolLM2 (offline): utterance x utterance attention per layer for a
chat-template conversation — which earlier turns each turn reads.

    python examples/task_dialogue.py [--small]

--small captures three layers (first, middle, last) instead of all 30.
"""

import sys
from pathlib import Path

from attnscope.models import load_model
from attnscope.tasks import plots
from attnscope.tasks.dialogue import dialogue_attention

messages = [{"role": "user", "content": "Hi, I'm Ana and I live in Lisbon."},
            {"role": "assistant", "content": "Hello Ana! Lisbon is lovely this time of year."},
            {"role": "user", "content": "Can you recommend a book?"},
            {"role": "assistant", "content": "Try 'The Book of Disquiet' by Fernando Pessoa."},
            {"role": "user", "content": "Which city do I live in?"}]
d = dialogue_attention(load_model("smollm2"), messages, layers=[0, 15, 29] if "--small" in sys.argv else None)
for i in range(1, len(d.turns)):
    print(f"turn {i} ({d.turns[i].role}) reads:", ", ".join(f"{j}:{d.turns[j].role} {s:.0%}" for j, s in d.reads(i)))
print("figure:", plots.plot_dialogue(d, Path("attnscope-out/task_dialogue/dialogue.png")))
