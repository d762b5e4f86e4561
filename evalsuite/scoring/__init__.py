"""Scoring: answer extraction, metrics with exact definitions, bootstrap intervals."""

from evalsuite.scoring.consistency import AGREEMENT, VOTE_RULE, Vote, agreement_interval, majority_vote
from evalsuite.scoring.extract import answer_index, clean_generation, extract_answer, normalise
from evalsuite.scoring.groups import accuracy_by_group
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
    "AGREEMENT",
    "VOTE_RULE",
    "Vote",
    "accuracy_by_group",
    "agreement_interval",
    "clean_generation",
    "majority_vote",
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
