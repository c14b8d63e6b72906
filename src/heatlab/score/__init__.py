"""Score: metrics as pure functions on tensors (per-sample results; aggregation is separate)."""

from heatlab.score.co import co_records, co_score, prepare_heatmaps
from heatlab.score.five_band import FiveBandResult, five_band, soft_thresholds, stratify
from heatlab.score.gap import GapResult, gap_analysis
from heatlab.score.localisation import auc, localisation_metrics, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy

__all__ = [
    "co_records", "co_score", "prepare_heatmaps", "GapResult", "gap_analysis",
    "FiveBandResult", "five_band", "soft_thresholds", "stratify",
    "auc", "localisation_metrics", "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
]
