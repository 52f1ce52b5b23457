"""Analyses: pure functions of an AttentionTrace, one method a file, registered by name.

>>> from attnscope.analysis import list_analyses, run_analysis, explain
>>> result = run_analysis("rollout", trace, head_fusion="mean")
"""

from .registry import analysis_info, explain, get_analysis, list_analyses, register_analysis, run_analysis
from .results import (Curves, GraphResult, HeadScores, HeadSimilarity, MemoryEstimate, Projection, TokenMaps,
                      TokenScores, TraceComparison)

# Each method module registers itself on import.
from . import (compare, distance_profile, flow, graph, head_diversity, head_roles,  # noqa: E402,F401
               head_stats, induction, layer_summary, memory, position_variance, projection, rollout)
from .induction import repeated_random_tokens  # noqa: E402
from .memory import estimate_memory  # noqa: E402

__all__ = ["register_analysis", "list_analyses", "get_analysis", "analysis_info", "explain", "run_analysis",
           "TokenScores", "HeadScores", "TokenMaps", "Curves", "HeadSimilarity", "Projection", "MemoryEstimate",
           "TraceComparison", "GraphResult", "repeated_random_tokens", "estimate_memory"]
