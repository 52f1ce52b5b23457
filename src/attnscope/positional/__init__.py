"""Positional encodings and attention: sinusoidal (Vaswani et al. 2017), learned absolute (BERT/MiniLM) with a
content/position split of layer-0 scores (after Ke et al. 2021), rotary (Su et al. 2021) frequencies and the
effect of the rotation alone on a real head's q·k. See :mod:`.encodings`; figures in :mod:`.plots`."""

from .._lazy import lazy_exports

_EXPORTS = {
    "KINDS": ".encodings", "TERMS": ".encodings", "SinusoidalPositions": ".encodings", "sinusoidal": ".encodings",
    "sinusoidal_encoding": ".encodings", "sinusoidal_frequencies": ".encodings",
    "LearnedPositions": ".encodings", "learned_positions": ".encodings",
    "ScoreDecomposition": ".encodings", "score_decomposition": ".encodings",
    "RotaryFrequencies": ".encodings", "rotary_frequencies": ".encodings", "RotaryProfile": ".encodings",
    "rotary_profile": ".encodings", "apply_rotary": ".encodings", "rotate_half": ".encodings",
    "plot_sinusoidal": ".plots", "plot_learned": ".plots", "plot_rotary": ".plots",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
