"""Score: metrics as pure functions on tensors (per-sample results; aggregation is separate).

Submodules are attributes of the package under their own names (``heatlab.score.five_band`` is the
module; its function is ``heatlab.score.five_band.five_band``).
"""

from heatlab.score import five_band, metrics, quantus
from heatlab.score.co import co_records, co_score, prepare_heatmaps
from heatlab.score.five_band import FiveBandResult, soft_thresholds, stratify
from heatlab.score.gap import GapResult, gap_analysis
from heatlab.score.localisation import auc, localisation_metrics, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from heatlab.score.metrics import METRICS, FromAttributions, Metric, available_metrics, metric_registry, per_sample_scores, register

__all__ = [
    "co_records", "co_score", "prepare_heatmaps", "GapResult", "gap_analysis",
    "FiveBandResult", "five_band", "soft_thresholds", "stratify",
    "auc", "localisation_metrics", "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
    "METRICS", "FromAttributions", "Metric", "available_metrics", "metric_registry", "metrics", "per_sample_scores", "quantus", "register",
]
