"""Scoring: answer extraction, metrics with exact definitions, bootstrap intervals."""

from evalsuite.scoring.extract import answer_index, extract_answer, normalise
from evalsuite.scoring.metrics import (
    METRICS,
    MetricResult,
    Predictions,
    bootstrap_indices,
    compute_metrics,
    confusion_counts,
    expected_score,
    resolve_metric,
)

__all__ = [
    "METRICS",
    "MetricResult",
    "Predictions",
    "answer_index",
    "bootstrap_indices",
    "compute_metrics",
    "confusion_counts",
    "expected_score",
    "extract_answer",
    "normalise",
    "resolve_metric",
]
