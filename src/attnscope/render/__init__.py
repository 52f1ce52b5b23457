"""Figures (matplotlib, plotly) and self-contained HTML for traces and analysis results.

Every figure function returns a Figure; :func:`save_figure` writes PNG, SVG and PDF.
"""

from .._lazy import lazy_exports

# Imported on first use (matplotlib and torch behind them), so `attnscope report --help` stays fast.
_EXPORTS = {
    **dict.fromkeys(["layer_animation", "mp4_available"], ".animation"),
    **dict.fromkeys(["comparison_figure", "cross_alignment", "curves_figure", "graph_figure", "head_heatmap",
                     "head_scores_heatmap", "layer_head_grid", "layer_means", "memory_figure", "plot",
                     "projection_figure", "query_bars", "rollout_figure", "similarity_figure", "stats_dashboard",
                     "token_map", "token_scores_figure"], ".figures"),
    **dict.fromkeys(["flow_3d_figure", "write_flow_3d_html"], ".flow3d"),
    **dict.fromkeys(["SEQUENTIAL_CMAP", "has_cjk_font", "save_figure", "set_token_ticks"], ".style"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["save_figure", "set_token_ticks", "has_cjk_font", "SEQUENTIAL_CMAP", "plot", "head_heatmap",
           "layer_head_grid", "layer_means", "cross_alignment", "query_bars", "stats_dashboard",
           "head_scores_heatmap", "token_map", "rollout_figure", "curves_figure", "similarity_figure",
           "projection_figure", "graph_figure", "memory_figure", "comparison_figure", "token_scores_figure",
           "layer_animation", "mp4_available", "flow_3d_figure", "write_flow_3d_html"]
