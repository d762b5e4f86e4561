"""Scoring: answer extraction, metrics with exact definitions, bootstrap intervals, variance decomposition."""

from evalsuite.scoring.consistency import AGREEMENT, VOTE_RULE, Vote, agreement_interval, majority_vote
from evalsuite.scoring.extract import Thinking, answer_index, clean_generation, extract_answer, normalise, split_thinking
from evalsuite.scoring.groups import accuracy_by_group
from evalsuite.scoring.metrics import (
    METRICS,
    Metric,
    MetricResult,
    Predictions,
    bootstrap_indices,
    choose,
    compute_metrics,
    confusion_counts,
    document_mean,
    expected_score,
    metrics_for,
    register_metric,
    resolve_metric,
)
from evalsuite.scoring.variance import VarianceDecomposition, variance_decomposition

__all__ = [
    "AGREEMENT",
    "VOTE_RULE",
    "Thinking",
    "Vote",
    "accuracy_by_group",
    "agreement_interval",
    "clean_generation",
    "majority_vote",
    "METRICS",
    "Metric",
    "MetricResult",
    "Predictions",
    "answer_index",
    "bootstrap_indices",
    "choose",
    "compute_metrics",
    "confusion_counts",
    "document_mean",
    "expected_score",
    "extract_answer",
    "metrics_for",
    "normalise",
    "register_metric",
    "resolve_metric",
    "split_thinking",
    "VarianceDecomposition",
    "variance_decomposition",
]
