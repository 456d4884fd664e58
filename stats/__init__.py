"""Pure statistics for Pingyi over NumPy arrays: no Flask, no SQLAlchemy. Usable from a notebook."""

from stats.aggregate import Aggregate, AggregateRules, Dissatisfaction, aggregate, dissatisfaction
from stats.bias import BiasReport, BiasSettings, detect_bias
from stats.reliability import (
    FleissKappa, IccRow, KendallW, fleiss_kappa, fleiss_kappa_detail, icc, icc_oneway,
    icc_oneway_matrix, icc_table, kendall_w, krippendorff_alpha,
)
from stats.robust import robust_scale, robust_z, wilson_interval
from stats.trim import TrimRule, trimmed_mean

__all__ = [
    "Aggregate", "AggregateRules", "BiasReport", "BiasSettings", "Dissatisfaction", "FleissKappa", "IccRow", "KendallW",
    "TrimRule", "aggregate", "detect_bias", "dissatisfaction", "fleiss_kappa", "fleiss_kappa_detail", "icc",
    "icc_oneway", "icc_oneway_matrix", "icc_table", "kendall_w", "krippendorff_alpha",
    "robust_scale", "robust_z", "trimmed_mean", "wilson_interval",
]
