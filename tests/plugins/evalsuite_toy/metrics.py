"""Balanced accuracy: the unweighted mean over gold classes of the share of that class's documents answered right."""

from __future__ import annotations

import numpy as np

from evalsuite.scoring import Metric, Predictions, register_metric


def _stat(codes: np.ndarray, p: Predictions) -> np.ndarray:
    """(B, n) codes gold * 2 + correct -> (B,) mean over the classes present of their recall."""
    counts = np.stack([(codes == 2 * k + c).sum(axis=1) for k in range(p.n_classes) for c in (0, 1)], axis=1)
    per_class = counts.reshape(len(codes), p.n_classes, 2)
    totals = per_class.sum(axis=2)
    recall = np.divide(per_class[:, :, 1], totals, out=np.zeros(totals.shape), where=totals > 0)
    return recall.sum(axis=1) / np.maximum((totals > 0).sum(axis=1), 1)


register_metric(Metric(
    "balanced_accuracy",
    per_doc=lambda p: p.gold * 2 + (p.pred == p.gold),
    stat=_stat,
    describe=lambda p: "balanced_accuracy: mean over the gold classes present of their recall",
))
