"""Metrics over subsets of documents, e.g. accuracy by difficulty level of a generated task."""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from evalsuite.scoring.metrics import UNPARSEABLE, Predictions, compute_metrics


def subset(preds: Predictions, index: np.ndarray) -> Predictions:
    """The predictions of the documents at ``index``."""
    pick = lambda values: None if values is None else tuple(values[i] for i in index)  # noqa: E731
    return Predictions(
        pred=preds.pred[index], gold=preds.gold[index], n_classes=preds.n_classes, labels=preds.labels,
        positive=preds.positive, pred_norm=None if preds.pred_norm is None else preds.pred_norm[index],
        pred_text=pick(preds.pred_text), gold_text=pick(preds.gold_text), clusters=pick(preds.clusters),
        cluster_by=preds.cluster_by, draws=preds.draws,
    )


def accuracy_by_group(preds: Predictions, groups: Sequence[Hashable], *, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, dict[str, float | int]]:
    """``{group: {n, accuracy, low, high, unparseable_rate}}`` in sorted group order; each interval is the
    percentile bootstrap of :func:`~evalsuite.scoring.compute_metrics` over that group's documents."""
    if len(groups) != preds.n:
        raise ValueError(f"{len(groups)} groups for {preds.n} documents")
    out: dict[str, dict[str, float | int]] = {}
    for group in sorted(set(groups)):
        index = np.array([i for i, g in enumerate(groups) if g == group])
        part = subset(preds, index)
        accuracy = compute_metrics(["accuracy"], part, n_boot=n_boot, seed=seed)["accuracy"]
        out[str(group)] = {
            "n": int(len(index)), "accuracy": accuracy.value, "low": accuracy.low, "high": accuracy.high,
            "unparseable_rate": float((part.pred == UNPARSEABLE).mean()),
        }
    return out
