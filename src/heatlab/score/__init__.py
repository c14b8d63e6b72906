"""Score: metrics as pure functions on tensors (per-sample results; aggregation is separate)."""

from heatlab.score.five_band import FiveBandResult, five_band, soft_thresholds, stratify
from heatlab.score.localisation import auc, localisation_metrics, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy

__all__ = [
    "FiveBandResult", "five_band", "soft_thresholds", "stratify",
    "auc", "localisation_metrics", "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
]
