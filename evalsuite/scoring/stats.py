"""Paired significance tests and rank statistics for comparing two systems on the same documents.

- :func:`mcnemar_exact`: exact two-sided McNemar test, a binomial test on the discordant pairs.
- :func:`paired_bootstrap`: the difference of any metric between two systems, resampling documents jointly
  (the same resampled documents for both), with a percentile interval and a two-sided p-value.
- :func:`paired_test`: the test a metric calls for -- exact McNemar for per-document 0/1 metrics (accuracy,
  exact match), paired bootstrap for the rest (F1, MCC) -- with the bootstrap interval of the difference.
  Documents with cluster keys (a task's cluster field) are resampled cluster by cluster, and the p-value is
  then the paired cluster bootstrap's: McNemar assumes independent documents.
- :func:`holm`: Holm's step-down adjustment of p-values for a family of tests.
- :func:`kendall_tau_b`: rank agreement of two score lists, ties handled (tau-b).
- :func:`fleiss_kappa`: chance-corrected agreement of several raters (here: prompt variants) per document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalsuite.errors import MetricError
from evalsuite.scoring.metrics import Predictions, document_mean, resampled_units, resamples, resolve_metric

__all__ = ["PairedTest", "fleiss_kappa", "holm", "kendall_tau_b", "mcnemar_exact", "paired_bootstrap",
           "paired_test"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` pairs where only A is right and ``c`` where only B is.

    Under the null each discordant pair favours A with probability 1/2, so ``b ~ Binomial(b + c, 1/2)``;
    p = min(1, 2 · P(X ≤ min(b, c))), and 1 when there are no discordant pairs.
    """
    if b < 0 or c < 0:
        raise MetricError(f"McNemar counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = math.fsum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _value(metric_name: str, preds: Predictions) -> float:
    metric = resolve_metric(metric_name)
    return float(metric.stat(metric.per_doc(preds)[None, :], preds)[0])


def _check_paired(a: Predictions, b: Predictions) -> None:
    if a.n != b.n:
        raise MetricError(f"paired comparison needs the same documents: A has {a.n}, B has {b.n}")
    if a.n == 0:
        raise MetricError("paired comparison over 0 documents")
    if not np.array_equal(a.gold, b.gold):
        raise MetricError("paired comparison: A and B disagree on the gold answer of some documents "
                          "(they are not the same documents in the same order)")


def _paired(a: Predictions, b: Predictions) -> Predictions:
    """The side whose cluster keys the paired resamples follow: one that has them (A's when both do and agree)."""
    if a.clusters is not None and b.clusters is not None and a.clusters != b.clusters:
        raise MetricError("paired comparison: A and B put the same documents in different clusters (the task's "
                          "cluster field changed between the runs); rerun one so that both use the same field")
    return b if a.clusters is None else a


def paired_bootstrap(metric_name: str, a: Predictions, b: Predictions, *, n_boot: int = 10000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(difference A − B, low, high, p) for ``metric_name`` by the paired percentile bootstrap.

    Each resample draws documents with replacement (whole clusters when either side has cluster keys:
    :func:`~evalsuite.scoring.metrics.resamples`) and scores A and B on the same draw. The interval is the
    percentile interval of the resampled differences. The p-value tests "no difference" by shifting the
    resampled differences to mean zero (the null): p = (1 + #{|δ* − δ| ≥ |δ|}) / (B + 1), so it is never 0
    and equals 1 when δ = 0.
    """
    _check_paired(a, b)
    delta = _value(metric_name, a) - _value(metric_name, b)
    metric = resolve_metric(metric_name)
    xa, xb = metric.per_doc(a), metric.per_doc(b)
    deltas = np.concatenate([metric.stat(xa[idx], a) - metric.stat(xb[idx], b)
                             for idx in resamples(_paired(a, b), n_boot, seed)])
    alpha = 1 - confidence
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.count_nonzero(np.abs(deltas - delta) >= abs(delta) - 1e-12))
    return delta, float(low), float(high), (1 + extreme) / (n_boot + 1)


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison of a metric between systems A and B on the same n documents."""

    metric: str
    n: int
    value_a: float
    value_b: float
    diff: float  # value_a - value_b
    low: float  # interval of the difference
    high: float
    p_value: float
    test: str  # "exact McNemar", "paired bootstrap" or "paired cluster bootstrap"
    only_a: int | None  # McNemar: documents only A gets right
    only_b: int | None  # McNemar: documents only B gets right
    definition: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_binary(metric_name: str, *preds: Predictions) -> bool:
    """A mean of per-document 0/1 values (accuracy, exact match): McNemar applies."""
    metric = resolve_metric(metric_name)
    return metric.stat is document_mean and all(np.isin(metric.per_doc(p), (0.0, 1.0)).all() for p in preds)


def paired_test(metric_name: str, a: Predictions, b: Predictions, *, n_boot: int = 10000, seed: int = 0,
                confidence: float = 0.95) -> PairedTest:
    """Exact McNemar for 0/1 per-document metrics, paired bootstrap otherwise; the interval is always the
    paired percentile bootstrap of A − B. Clustered documents get the paired cluster bootstrap's p-value
    whatever the metric."""
    delta, low, high, p_boot = paired_bootstrap(metric_name, a, b, n_boot=n_boot, seed=seed, confidence=confidence)
    value_a, value_b = _value(metric_name, a), _value(metric_name, b)
    units = _paired(a, b)
    interval = (f"{confidence * 100:g}% paired percentile bootstrap interval of A − B over "
                f"{resampled_units(units)} ({n_boot} resamples, seed {seed})")
    if units.clusters is not None:
        return PairedTest(metric_name, a.n, value_a, value_b, delta, low, high, p_boot, "paired cluster bootstrap",
                          None, None,
                          f"{metric_name} difference A − B on the {a.n} paired documents; p: two-sided paired "
                          "cluster bootstrap test, (1 + #{|δ* − δ| ≥ |δ|}) / (B + 1) over the resampled "
                          f"differences δ* (documents of a cluster are not independent, so no McNemar); {interval}")
    if _is_binary(metric_name, a, b):
        per_doc = resolve_metric(metric_name).per_doc
        xa, xb = per_doc(a), per_doc(b)
        only_a, only_b = int(np.sum((xa == 1) & (xb == 0))), int(np.sum((xa == 0) & (xb == 1)))
        return PairedTest(metric_name, a.n, value_a, value_b, delta, low, high, mcnemar_exact(only_a, only_b),
                          "exact McNemar", only_a, only_b,
                          f"{metric_name} difference A − B on the {a.n} paired documents; p: exact two-sided "
                          f"McNemar test (binomial on the {only_a + only_b} discordant documents); {interval}")
    return PairedTest(metric_name, a.n, value_a, value_b, delta, low, high, p_boot, "paired bootstrap", None, None,
                      f"{metric_name} difference A − B on the {a.n} paired documents; p: two-sided paired bootstrap "
                      f"test, (1 + #{{|δ* − δ| ≥ |δ|}}) / (B + 1) over the resampled differences δ*; {interval}")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order.

    Sorted ascending p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)). Rejecting where
    adj ≤ α controls the family-wise error rate at α. NaN entries are kept as NaN and not counted in m.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="mergesort")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists of the same items (NaN when undefined, e.g. all tied)."""
    if len(x) != len(y):
        raise MetricError(f"kendall_tau_b needs lists of equal length, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    from scipy.stats import kendalltau

    return float(kendalltau(x, y, variant="b").statistic)


def fleiss_kappa(ratings: np.ndarray) -> float:
    """Fleiss' kappa of an (items, raters) array of category codes: (P̄ − P̄e) / (1 − P̄e).

    P̄ is the mean over items of the share of agreeing rater pairs, P̄e the same expected by chance from
    the overall category shares. NaN when chance agreement is 1 (every rating the same category).
    """
    ratings = np.asarray(ratings)
    if ratings.ndim != 2 or ratings.shape[1] < 2 or ratings.shape[0] < 1:
        raise MetricError(f"fleiss_kappa needs an (items, raters >= 2) array, got shape {ratings.shape}")
    _, codes = np.unique(ratings, return_inverse=True)
    codes = codes.reshape(ratings.shape)
    r = ratings.shape[1]
    counts = np.stack([(codes == k).sum(axis=1) for k in range(codes.max() + 1)], axis=1)  # (items, categories)
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (r * (r - 1))
    shares = counts.sum(axis=0) / counts.sum()
    p_e = float((shares**2).sum())
    return math.nan if math.isclose(p_e, 1.0) else (float(p_item.mean()) - p_e) / (1 - p_e)
