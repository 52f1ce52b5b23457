"""Generation monitor on the packaged SmolLM2 (offline): per generated token attention entropy per layer,
max weight, prompt vs generated mass, first-token (sink) mass and the model's confidence.

    python examples/task_generation_monitor.py [--small]

--small generates 6 tokens instead of 24.
"""

import sys
from pathlib import Path

from attnscope.models import load_model
from attnscope.tasks import plots
from attnscope.tasks.generation_monitor import monitor_generation

lm = load_model("smollm2")
out = Path("attnscope-out/task_generation")
for name, kw in [("greedy", {}), ("sampled", {"do_sample": True, "temperature": 0.9, "seed": 1})]:
    m = monitor_generation(lm, "Write one sentence about the sea.", chat=True,
                           max_new_tokens=6 if "--small" in sys.argv else 24, **kw)
    print(f"[{name}] {m.text!r}")
    print(f"  mean confidence {m.confidence.mean():.2f}, sink mass {m.sink_mass.mean():.2f}, "
          f"prompt mass {m.prompt_mass.mean():.2f}")
    for f in m.flagged():
        print(f"  low confidence: step {f['step']} {f['token']!r} p={f['confidence']:.3f}")
    print("  figure:", plots.plot_generation(m, out / f"generation_{name}.png"))
