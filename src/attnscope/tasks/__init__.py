"""Task analyses on real models (each module imports its heavy dependencies lazily).

- :mod:`.sentiment`: fine-tune MiniLM on the packaged tweets; class patterns, attended words, rollout vs IG.
- :mod:`.qa`: extractive QA — question→context attention, attention to the answer, answer heads.
- :mod:`.alignment`: source × target alignment from cross-attention; scoring heads as aligners.
- :mod:`.whisper_timestamps`: Whisper word timestamps by DTW over the alignment heads; espeak-ng test speech.
- :mod:`.generation_monitor`: per generated token attention statistics and confidence (causal LMs).
- :mod:`.dialogue`: turn × turn attention for chat-template conversations.
- :mod:`.plots`: their figures; :mod:`.cli`: ``attnscope tasks …``.
"""
