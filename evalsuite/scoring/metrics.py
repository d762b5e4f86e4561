"""Classification / multiple-choice metrics with seeded, vectorised percentile-bootstrap intervals.

Every metric is split in two: ``per_doc`` turns the predictions into one number per document
(a 0/1 correctness flag, or a confusion-matrix cell code), and ``stat`` reduces a ``(B, n)``
array of those numbers -- one row per bootstrap resample -- to ``B`` metric values without a
Python loop over documents.  The point estimate is ``stat`` on the single identity "resample".
Metrics are looked up by name in :data:`METRICS`; :func:`register_metric` adds one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalsuite.errors import MetricError
from evalsuite.registry import Registry
from evalsuite.scoring.extract import FLEXIBLE_RULE, STRICT_RULE

UNPARSEABLE = -1
_CHUNK = 1 << 20  # max gathered elements per bootstrap chunk (bounds memory for large n_boot * n)


def _int_array(field: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise MetricError(f"Predictions.{field} must hold integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise MetricError(f"Predictions.{field} must be one-dimensional, got shape {a.shape}")
    a = a.astype(np.int64)  # copy, then freeze: the dataclass is immutable
    a.setflags(write=False)
    return a


def _float_array(field: str, x: Any) -> np.ndarray:
    try:
        a = np.array(x, dtype=np.float64)  # copy, then freeze
    except (TypeError, ValueError):
        raise MetricError(f"Predictions.{field} must hold numbers") from None
    if a.ndim != 1:
        raise MetricError(f"Predictions.{field} must be one-dimensional, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise MetricError(f"Predictions.{field} must hold finite numbers")
    a.setflags(write=False)
    return a


def _probability_rows(x: Any, n: int, k: int) -> np.ndarray:
    """``x`` as an (n, k) array of probability rows: each in [0, 1], each row summing to 1."""
    try:
        a = np.array(x, dtype=np.float64)  # copy, then freeze
    except (TypeError, ValueError):
        raise MetricError("Predictions.probs must hold numbers, one row of choice probabilities per document") from None
    if a.shape != (n, k):
        raise MetricError(f"Predictions.probs must have shape (documents, n_classes) = ({n}, {k}), got {a.shape}")
    if n and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1 or not np.allclose(a.sum(axis=1), 1.0)):
        raise MetricError("Predictions.probs must hold probabilities in [0, 1] whose rows sum to 1")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make a field-wise __eq__/__hash__ meaningless
class Predictions:
    """Per-document predictions of one task × prompt variant."""

    pred: np.ndarray  # int, predicted class/choice index; -1 = unparseable answer (always wrong)
    gold: np.ndarray  # int, gold class/choice index
    n_classes: int  # number of classes (labels) / choices (max over documents for MC)
    labels: tuple[str, ...]  # label names, len n_classes
    positive: int | None = None  # index of the positive class for binary F1 (None -> 1)
    pred_norm: np.ndarray | None = None  # int, prediction under length-normalised log-likelihood
    pred_text: tuple[str, ...] | None = None  # for exact_match: extracted answer strings
    gold_text: tuple[str, ...] | None = None
    score: np.ndarray | None = None  # float, predicted graded score (similarity tasks), see expected_score
    gold_score: np.ndarray | None = None  # float, gold graded score
    clusters: tuple[str, ...] | None = None  # each document's cluster key; intervals then resample whole clusters
    cluster_by: str | None = None  # what the keys are (the task's cluster field), for the interval's definition
    pred_flexible: np.ndarray | None = None  # int, a generated answer read by the flexible rule; -1 = unparseable
    probs: np.ndarray | None = None  # float (n, n_classes), each document's choice probabilities (padded with 0)
    draws: int = 1  # few-shot draws per document: with several, each row is a document's draw (see resampled_units)
    n_correct: np.ndarray | None = None  # int, per row how many of its n_samples sampled answers are correct
    n_samples: int = 1  # sampled answers per row (generation with several samples)

    def __post_init__(self) -> None:
        k = int(self.n_classes)
        object.__setattr__(self, "n_classes", k)
        object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))
        for f in ("pred", "gold", "pred_norm", "pred_flexible", "n_correct"):
            if getattr(self, f) is not None:
                object.__setattr__(self, f, _int_array(f, getattr(self, f)))
        n = len(self.gold)
        if k < 1 or len(self.labels) != k:
            raise MetricError(f"Predictions: n_classes={k} must be >= 1 and equal len(labels)={len(self.labels)}")
        if len(set(self.labels)) != k:
            raise MetricError(f"Predictions: label names must be unique, got {self.labels}")
        if n and (self.gold.min() < 0 or self.gold.max() >= k):
            raise MetricError(f"Predictions.gold must lie in [0, {k}), got range [{self.gold.min()}, {self.gold.max()}]")
        for f in ("pred", "pred_norm", "pred_flexible"):
            a = getattr(self, f)
            if a is None:
                continue
            if len(a) != n:
                raise MetricError(f"Predictions.{f} has {len(a)} entries but gold has {n}")
            if n and (a.min() < UNPARSEABLE or a.max() >= k):
                raise MetricError(f"Predictions.{f} must lie in [-1, {k}), got range [{a.min()}, {a.max()}]")
        for f in ("score", "gold_score"):
            if getattr(self, f) is not None:
                a = _float_array(f, getattr(self, f))
                object.__setattr__(self, f, a)
                if len(a) != n:
                    raise MetricError(f"Predictions.{f} has {len(a)} entries but gold has {n}")
        for f in ("pred_text", "gold_text", "clusters"):
            t = getattr(self, f)
            if t is not None:
                object.__setattr__(self, f, tuple(t))
                if len(t) != n:
                    raise MetricError(f"Predictions.{f} has {len(t)} entries but gold has {n}")
        if self.probs is not None:
            object.__setattr__(self, "probs", _probability_rows(self.probs, n, k))
        if self.clusters is not None and not all(isinstance(c, str) for c in self.clusters):
            raise MetricError("Predictions.clusters must hold one string key per document")
        if self.positive is not None and not 0 <= self.positive < k:
            raise MetricError(f"Predictions.positive={self.positive} is not a class index in [0, {k})")
        if self.draws < 1 or self.n_samples < 1:
            raise MetricError(f"Predictions: draws={self.draws} and n_samples={self.n_samples} must be >= 1")
        if self.draws > 1 and self.clusters is None:
            raise MetricError("Predictions with several few-shot draws need cluster keys: the rows of one document "
                              "are resampled together")
        if self.n_correct is not None:
            if len(self.n_correct) != n:
                raise MetricError(f"Predictions.n_correct has {len(self.n_correct)} entries but gold has {n}")
            if n and (self.n_correct.min() < 0 or self.n_correct.max() > self.n_samples):
                raise MetricError(f"Predictions.n_correct must lie in [0, n_samples={self.n_samples}]")

    @property
    def n(self) -> int:
        """Number of documents (of rows, document × draw, with several few-shot draws)."""
        return len(self.gold)

    @property
    def documents(self) -> int:
        """Number of documents, each counted once whatever its draws."""
        return self.n // self.draws

    @property
    def pos(self) -> int:
        """Index of the positive class for binary F1."""
        return 1 if self.positive is None else self.positive


@dataclass(frozen=True)
class MetricResult:
    """A point value with its interval and the exact definition used."""

    name: str
    value: float
    low: float
    high: float  # interval bounds at the requested confidence (95% by default)
    definition: str  # exact definition incl. normalisation / averaging / interval method

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Metric:
    """A metric: per-document encoding, vectorised per-resample reduction, definition text."""

    name: str
    per_doc: Callable[[Predictions], np.ndarray]  # (n,) per-document values / cell codes
    stat: Callable[[np.ndarray, Predictions], np.ndarray]  # (B, n) gathered values -> (B,)
    describe: Callable[[Predictions], str]
    loglikelihood_only: bool = False  # needs every choice's log-likelihood (pred_norm): not for generated answers
    needs_probs: bool = False  # needs each document's choice probabilities (probs): not for generated answers


METRICS: Registry[Metric] = Registry("metric", "evalsuite.metrics", MetricError)


def register_metric(metric: Metric) -> Metric:
    """Register ``metric`` under its name (``metrics:`` in a task file) and return it.

    Another package registers its metrics through the ``evalsuite.metrics`` entry-point group
    (see :mod:`evalsuite.registry`).
    """
    return METRICS.add(metric.name, metric)


def resolve_metric(name: str) -> Metric:
    """Look a metric up by name; unknown names raise MetricError listing the known ones."""
    return METRICS.resolve(name)


# ---------------------------------------------------------------- confusion-matrix metrics
def _cell_codes(p: Predictions) -> np.ndarray:
    """gold * (K+1) + pred, with unparseable (-1) mapped to the extra predicted column K."""
    k = p.n_classes
    return p.gold * (k + 1) + np.where(p.pred == UNPARSEABLE, k, p.pred)


def _confusion(codes: np.ndarray, k: int) -> np.ndarray:
    """(B, n) cell codes -> (B, K, K+1) confusion matrices (rows gold, columns pred, last = unparseable)."""
    b, cells = codes.shape[0], k * (k + 1)
    keys = (np.arange(b)[:, None] * cells + codes).ravel()
    return np.bincount(keys, minlength=b * cells).reshape(b, k, k + 1)


def _per_class_f1(cm: np.ndarray) -> np.ndarray:
    """(B, K, K+1) -> (B, K) F1 = 2TP / (gold count + predicted count); 0 where that is 0."""
    k = cm.shape[1]
    tp = cm[:, np.arange(k), np.arange(k)]
    denom = cm.sum(axis=2) + cm[:, :, :k].sum(axis=1)  # 2TP+FP+FN
    return np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)


def _macro_f1(codes: np.ndarray, p: Predictions) -> np.ndarray:
    return _per_class_f1(_confusion(codes, p.n_classes)).mean(axis=1)


def _binary_f1(codes: np.ndarray, p: Predictions) -> np.ndarray:
    return _per_class_f1(_confusion(codes, p.n_classes))[:, p.pos]


def _auto_f1(codes: np.ndarray, p: Predictions) -> np.ndarray:
    return (_binary_f1 if p.n_classes == 2 else _macro_f1)(codes, p)


def _mcc(codes: np.ndarray, p: Predictions) -> np.ndarray:
    """Gorodkin's R_K as in sklearn: (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)); 0 when undefined."""
    cm = _confusion(codes, p.n_classes).astype(np.float64)
    k = p.n_classes
    t = cm.sum(axis=2)  # (B, K) gold counts
    pr = cm.sum(axis=1)  # (B, K+1) predicted counts, incl. the unparseable column (whose gold count is 0)
    c = cm[:, np.arange(k), np.arange(k)].sum(axis=1)
    s = t.sum(axis=1)
    num = c * s - (t * pr[:, :k]).sum(axis=1)
    den = np.sqrt((s**2 - (pr**2).sum(axis=1)) * (s**2 - (t**2).sum(axis=1)))
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


# ---------------------------------------------------------------- per-document mean metrics
def document_mean(x: np.ndarray, _p: Predictions) -> np.ndarray:
    """The ``stat`` of a mean of per-document values: ``(B, n) -> (B,)``. Paired tests treat a metric with this
    ``stat`` and 0/1 values as a proportion (exact McNemar)."""
    return x.mean(axis=1)


def _correct_norm(p: Predictions) -> np.ndarray:
    if p.pred_norm is None:
        raise MetricError("accuracy_norm needs Predictions.pred_norm (length-normalised log-likelihood choices); "
                          "it applies only to log-likelihood multiple-choice scoring")
    return (p.pred_norm == p.gold).astype(np.float64)


def _flexible(p: Predictions) -> np.ndarray:
    if p.pred_flexible is None:
        raise MetricError("accuracy_flexible and unparseable_rate_flexible need Predictions.pred_flexible (generated "
                          "answers read by the flexible rule); they apply only to generation prompts")
    return p.pred_flexible


def _exact(p: Predictions) -> np.ndarray:
    if p.pred_text is None or p.gold_text is None:
        raise MetricError("exact_match needs Predictions.pred_text and Predictions.gold_text")
    return np.array([a is not None and g is not None and str(a).strip() == str(g).strip()
                     for a, g in zip(p.pred_text, p.gold_text)], dtype=np.float64)


def _needs_binary(p: Predictions) -> np.ndarray:
    if p.n_classes != 2:
        raise MetricError(f"f1_binary needs a two-class task, this one has n_classes={p.n_classes} {p.labels}; "
                          "use f1_macro")
    return _cell_codes(p)


# ---------------------------------------------------------------- correlations of graded scores
def choice_probabilities(logprobs: Sequence[float]) -> np.ndarray:
    """The softmax of a document's choice log-likelihoods: the model's probability of each choice.

    The log-likelihoods are those the prediction is the argmax of, each summed over its choice's tokens (not
    length-normalised), or a classification head's label log-probabilities.
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    p = np.exp(lp - lp.max())
    return p / p.sum()


def expected_score(logprobs: Sequence[float], values: Sequence[float]) -> float:
    """Σ_k p_k · v_k with p = softmax of the choices' log-likelihoods: the model's expected rating."""
    return float(choice_probabilities(logprobs) @ np.asarray(values, dtype=np.float64))


def _score_pairs(p: Predictions) -> np.ndarray:
    if p.score is None or p.gold_score is None:
        raise MetricError("pearson and spearman need Predictions.score and Predictions.gold_score: they apply to "
                          "graded tasks (a task with a 'graded' section)")
    return np.stack([p.score, p.gold_score], axis=-1)  # (n, 2); resampled to (B, n, 2)


def _unit_scale(c: np.ndarray) -> np.ndarray:
    """Divide each row by its largest magnitude, so squares of tiny deviations do not underflow."""
    m = np.abs(c).max(axis=1, keepdims=True)
    return np.divide(c, m, out=np.zeros_like(c), where=m > 0)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of (B, n) arrays; 0 where either row is constant."""
    xc = _unit_scale(x - x.mean(axis=1, keepdims=True))
    yc = _unit_scale(y - y.mean(axis=1, keepdims=True))
    num = (xc * yc).sum(axis=1)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    ok = (np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0) & (den > 0)  # exact test: means round
    return np.clip(np.divide(num, den, out=np.zeros(num.shape), where=ok), -1.0, 1.0)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Row-wise ranks 1..n of a (B, n) array, ties sharing their average rank (scipy.stats.rankdata 'average')."""
    b, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    s = np.take_along_axis(x, order, axis=1)
    pos = np.broadcast_to(np.arange(n), (b, n))
    starts = np.ones((b, n), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)  # first position of each tie run
    ends = np.ones((b, n), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, pos, n), axis=1), axis=1), axis=1)
    ranks = np.empty((b, n))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _pearson(pairs: np.ndarray, _p: Predictions) -> np.ndarray:
    return _pearson_rows(pairs[..., 0], pairs[..., 1])


def _spearman(pairs: np.ndarray, _p: Predictions) -> np.ndarray:
    return _pearson_rows(average_ranks(pairs[..., 0]), average_ranks(pairs[..., 1]))


_SCORE = ("the predicted score is the expected rating Σ_k p_k·v_k over the task's choices, with v_k the value of "
          "choice k and p the softmax of the choices' log-likelihoods (log-likelihood prompts), or the value of the "
          "extracted choice (generated answers; an unparseable answer gets the mean of the values, a constant guess)")


# ---------------------------------------------------------------- calibration of the choice probabilities
CALIBRATION_BINS = 10  # equal-width confidence bins over [0, 1], for ece and the report's reliability diagrams


def confidence_bins(confidence: np.ndarray, n_bins: int = CALIBRATION_BINS) -> np.ndarray:
    """The bin of each confidence: bin b holds (b/n_bins, (b+1)/n_bins], the first bin also 0 (so with 10 bins a
    confidence of exactly 0.1 is in bin 0, of 0.2 in bin 1, of 1 in bin 9)."""
    edges = np.arange(n_bins + 1) / n_bins  # k / n_bins: the double nearest each edge, as a literal 0.3 is
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def _probs(p: Predictions) -> np.ndarray:
    if p.probs is None:
        raise MetricError("ece and brier need Predictions.probs (each document's choice probabilities): they apply "
                          "to log-likelihood prompts and classification heads, not to generated answers")
    return p.probs


def _top_choice(p: Predictions) -> np.ndarray:
    """Per document its confidence (the top choice's probability) and whether the prediction is right: (n, 2)."""
    return np.stack([_probs(p).max(axis=1), (p.pred == p.gold).astype(np.float64)], axis=-1)


def _ece(x: np.ndarray, _p: Predictions | None = None) -> np.ndarray:
    """(B, n, 2) confidences and 0/1 correctness -> (B,) ECE = Σ_b |Σ_{i in b} (correct_i − conf_i)| / n, which is
    Σ_b (n_b / n)·|acc_b − conf_b|."""
    b, n = x.shape[:2]
    keys = (np.arange(b)[:, None] * CALIBRATION_BINS + confidence_bins(x[..., 0])).ravel()
    gaps = np.bincount(keys, weights=(x[..., 1] - x[..., 0]).ravel(), minlength=b * CALIBRATION_BINS)
    return np.abs(gaps.reshape(b, CALIBRATION_BINS)).sum(axis=1) / n


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool]) -> float:
    """The ``ece`` of documents given by their top choice's probability and whether it is right."""
    x = np.stack([np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)], axis=-1)
    return float(_ece(x[None])[0])


def reliability(confidence: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin of ``ece``: the number of documents, their mean confidence and their accuracy (NaN in
    an empty bin)."""
    conf, hit = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    bins = confidence_bins(conf)
    counts = np.bincount(bins, minlength=CALIBRATION_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=CALIBRATION_BINS) / counts
        accuracy = np.bincount(bins, weights=hit, minlength=CALIBRATION_BINS) / counts
    return counts, mean_conf, accuracy


def _brier(p: Predictions) -> np.ndarray:
    probs = _probs(p)
    target = np.zeros_like(probs)
    target[np.arange(p.n), p.gold] = 1.0
    return ((probs - target) ** 2).sum(axis=1)


_PROBS = ("p is the softmax over a document's choices of their log-likelihoods, each summed over the choice's "
          "tokens (not length-normalised: the log-likelihoods pred is the argmax of), or of a classification head's "
          "label log-probabilities")

register_metric(Metric(
    "ece", _top_choice, _ece,
    lambda p: (f"ece: expected calibration error of the top choice, Σ_b (n_b / n)·|acc_b − conf_b| over "
               f"{CALIBRATION_BINS} equal-width confidence bins of [0, 1]: bin b holds the n_b documents with "
               f"confidence in (b/{CALIBRATION_BINS}, (b+1)/{CALIBRATION_BINS}] (the first bin also 0, so a "
               f"confidence of exactly 0.1 falls in the first bin [0, 0.1]), empty bins add nothing; confidence = "
               "max_k p_k, acc_b = mean(pred == gold) and conf_b = mean confidence of the bin's documents; "
               f"{_PROBS}; 0 is perfectly calibrated, lower is better"), needs_probs=True))
register_metric(Metric(
    "brier", _brier, document_mean,
    lambda p: ("brier: multi-class Brier score, mean over documents of Σ_k (p_k − 1[k = gold])² over the "
               f"document's choices, in [0, 2] (0: all probability on the gold choice; 2: all on one wrong choice), "
               f"lower is better; {_PROBS}"), needs_probs=True))


# ---------------------------------------------------------------- definitions
_UNP = "unparseable answers (pred = -1) count as wrong"


def _strict(p: Predictions) -> str:
    """How ``pred`` was read, where it was read from generated text (which the flexible reading marks)."""
    return "" if p.pred_flexible is None else f"; pred is a generated answer read by the {STRICT_RULE}"
_UNP_CM = ("unparseable answers (pred = -1) form their own predicted column of the confusion matrix "
           "that never matches gold (a false negative for the gold class; not itself averaged over)")


def _def_binary(p: Predictions) -> str:
    return (f"binary F1 of the positive class '{p.labels[p.pos]}' (index {p.pos}): 2TP / (2TP + FP + FN), "
            f"0 when TP + FP + FN = 0 (sklearn average='binary', zero_division=0); {_UNP_CM}")


def _def_macro(p: Predictions) -> str:
    return (f"macro F1: unweighted mean over all {p.n_classes} classes of per-class F1 = 2TP / (2TP + FP + FN); "
            "a class with no gold and no predicted documents has F1 = 0 and stays in the mean "
            f"(sklearn average='macro', labels=all classes, zero_division=0); {_UNP_CM}")


register_metric(Metric(
    "accuracy", lambda p: (p.pred == p.gold).astype(np.float64), document_mean,
    lambda p: f"accuracy: mean(pred == gold) over documents; {_UNP}{_strict(p)}"))
register_metric(Metric(
    "accuracy_norm", _correct_norm, document_mean,
    lambda p: ("accuracy_norm: mean(pred_norm == gold), where pred_norm is the choice with the highest "
               "log-likelihood divided by the choice's length in UTF-8 bytes "
               f"(lm-evaluation-harness acc_norm); {_UNP}"), loglikelihood_only=True))
register_metric(Metric(
    "f1", _cell_codes, _auto_f1,
    lambda p: "f1 (" + ("binary, 2 classes" if p.n_classes == 2 else f"macro, {p.n_classes} classes")
    + "): " + (_def_binary(p) if p.n_classes == 2 else _def_macro(p))))
register_metric(Metric("f1_macro", _cell_codes, _macro_f1, lambda p: "f1_macro: " + _def_macro(p)))
register_metric(Metric("f1_binary", _needs_binary, _binary_f1, lambda p: "f1_binary: " + _def_binary(p)))
register_metric(Metric(
    "mcc", _cell_codes, _mcc,
    lambda p: ("mcc: Matthews correlation coefficient, multiclass generalisation (Gorodkin 2004, as sklearn "
               "matthews_corrcoef): (c*s - sum_k p_k*t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)) "
               "with c correct documents, s documents, t_k gold and p_k predicted counts of class k; "
               "0 when the denominator is 0; unparseable answers (pred = -1) form their own predicted "
               "column that never matches gold (gold count 0, predicted count in sum_k p_k^2)")))
register_metric(Metric(
    "exact_match", _exact, document_mean,
    lambda p: ("exact_match: mean(pred_text.strip() == gold_text.strip()): leading/trailing whitespace "
               "removed (str.strip), otherwise case- and punctuation-sensitive; a missing answer (None) "
               "is wrong")))
register_metric(Metric(
    "pearson", _score_pairs, _pearson,
    lambda p: ("pearson: Pearson correlation coefficient between predicted and gold graded scores over "
               f"documents, 0 when either is constant; {_SCORE}")))
register_metric(Metric(
    "spearman", _score_pairs, _spearman,
    lambda p: ("spearman: Spearman rank correlation (Pearson correlation of the ranks, ties given their "
               "average rank) between predicted and gold graded scores over documents, 0 when either is "
               f"constant; {_SCORE}")))
register_metric(Metric(
    "unparseable_rate", lambda p: (p.pred == UNPARSEABLE).astype(np.float64), document_mean,
    lambda p: f"unparseable_rate: mean(pred == -1), the fraction of answers that could not be parsed{_strict(p)}"))
register_metric(Metric(
    "accuracy_flexible", lambda p: (_flexible(p) == p.gold).astype(np.float64), document_mean,
    lambda p: (f"accuracy_flexible: mean(pred_flexible == gold) over documents, pred_flexible the generated answer "
               f"read by the {FLEXIBLE_RULE}; unparseable answers (pred_flexible = -1) count as wrong")))
register_metric(Metric(
    "unparseable_rate_flexible", lambda p: (_flexible(p) == UNPARSEABLE).astype(np.float64), document_mean,
    lambda p: ("unparseable_rate_flexible: mean(pred_flexible == -1), the fraction of generated answers that the "
               f"{FLEXIBLE_RULE} could not read either")))


GENERATION_METRICS = ("unparseable_rate", "accuracy_flexible", "unparseable_rate_flexible")
PROBABILITY_METRICS = ("ece", "brier")  # every evaluation with choice probabilities reports these


# ---------------------------------------------------------------- several sampled answers per document
def pass_at_k(n: int, correct: Any, k: int) -> np.ndarray:
    """The unbiased estimator of pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code")
    from ``n`` sampled answers of which ``correct`` (an int or an array of them) are correct: 1 − C(n−c, k) /
    C(n, k), the chance that k answers drawn from the n without replacement hold a correct one; 1 when
    n − c < k. Computed as 1 − Π_{i=n−c+1..n} (1 − k/i), which needs no large binomials."""
    if not 1 <= k <= n:
        raise MetricError(f"pass@k needs 1 <= k <= n, got k={k} with n={n} samples")
    c = np.asarray(correct, dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() > n):
        raise MetricError(f"pass@k: correct counts must lie in [0, n={n}]")
    # kept[c]: the product of the last c factors (1 - k/i), i = n, n-1, ...; a factor i = k is 0, so n - c < k
    # gives 0 (pass@k = 1) exactly.
    kept = np.concatenate([[1.0], np.cumprod(1.0 - k / np.arange(n, 0, -1))])
    return 1.0 - kept[c]


def _sampled(p: Predictions) -> np.ndarray:
    if p.n_correct is None or p.n_samples < 2:
        raise MetricError("avg@k, maj@k and pass@k need several sampled answers per document (generation prompts "
                          "with --samples N or --seeds, N >= 2) with each answer's correctness (correct_samples)")
    return p.n_correct


def _per(p: Predictions) -> str:
    return "documents" if p.draws == 1 else "document × few-shot draw rows"


def _def_avg(p: Predictions) -> str:
    return (f"avg@k (k = {p.n_samples} sampled answers per document): mean over {_per(p)} of the share of the k "
            f"answers that are correct, each read by the {STRICT_RULE}; an unparseable answer counts as wrong. The "
            "unbiased estimate of pass@1")


def _def_maj(p: Predictions) -> str:
    return (f"maj@k (k = {p.n_samples} sampled answers per document): mean over {_per(p)} of (majority answer == "
            f"gold), the answers read by the {STRICT_RULE}; unparseable answers do not vote, a tie goes to the tied "
            "answer that appears first among the samples, and all unparseable counts as wrong (the voted accuracy)")


def _def_pass(p: Predictions) -> str:
    return (f"pass@k (k = n = {p.n_samples} sampled answers per document): mean over {_per(p)} of the unbiased "
            "estimator of Chen et al. (2021), 1 − C(n−c, k)/C(n, k) with c of the n answers correct (read by the "
            f"{STRICT_RULE}); with k = n, the share with at least one correct answer")


def _voted(p: Predictions) -> np.ndarray:
    _sampled(p)
    return (p.pred == p.gold).astype(np.float64)  # pred: the strict rule's majority vote


register_metric(Metric("avg@k", lambda p: _sampled(p) / p.n_samples, document_mean, _def_avg))
register_metric(Metric("maj@k", _voted, document_mean, _def_maj))
register_metric(Metric("pass@k", lambda p: pass_at_k(p.n_samples, _sampled(p), p.n_samples), document_mean,
                       _def_pass))
SAMPLED_METRICS = ("avg@k", "maj@k", "pass@k")


def choose(logprobs: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """The predicted choice of a log-likelihood prompt, and the one ``accuracy_norm`` scores: the highest
    log-likelihood, and the highest log-likelihood per UTF-8 byte of the choice."""
    byte_lengths = [max(len(c.encode("utf-8")), 1) for c in choices]
    return int(np.argmax(logprobs)), int(np.argmax(np.asarray(logprobs) / np.asarray(byte_lengths)))


def metrics_for(names: Sequence[str], method: str, samples: int = 1) -> list[str]:
    """The metrics a task × prompt method reports: those that need every choice's log-likelihood only for
    log-likelihood prompts (generated answers and classification heads have none), and always for generation
    prompts ``unparseable_rate`` (of the strict rule, which ``accuracy`` scores), ``accuracy_flexible`` and
    ``unparseable_rate_flexible``, and with ``samples`` >= 2 sampled answers per document also ``avg@k``,
    ``maj@k`` and ``pass@k``; for log-likelihood prompts and classification heads, whose choices have
    probabilities, always ``ece`` and ``brier`` too (generated answers have none)."""
    if method == "loglikelihood":
        kept = list(names)
    else:
        kept = [name for name in names if not resolve_metric(name).loglikelihood_only]
    if method == "generation":
        kept = [name for name in kept if not resolve_metric(name).needs_probs]
        extra = GENERATION_METRICS + (SAMPLED_METRICS if samples >= 2 else ())
        return kept + [name for name in extra if name not in kept]
    return kept + [name for name in PROBABILITY_METRICS if name not in kept]


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) document indices drawn with replacement from Generator(PCG64(seed))."""
    return np.concatenate(list(bootstrap_chunks(n, n_boot, seed)))


def bootstrap_chunks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of :func:`bootstrap_indices`, drawn from the same stream in blocks of at most ``_CHUNK``
    indices (at least one row), so that memory stays bounded however many documents there are."""
    if n < 1:
        raise MetricError("cannot bootstrap over 0 documents")
    if n_boot < 1:
        raise MetricError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = max(1, _CHUNK // n)
    return (rng.integers(0, n, size=(min(rows, n_boot - start), n)) for start in range(0, n_boot, rows))


def cluster_bootstrap_chunks(clusters: Sequence[Hashable], n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Cluster-bootstrap resamples of documents keyed by ``clusters`` (one key per document): each resample
    draws as many clusters as there are, with replacement, from Generator(PCG64(seed)), and keeps every
    document of each cluster drawn (twice for a cluster drawn twice).

    Resamples differ in size, so they come as ``(rows, size)`` blocks of document indices, one block per size
    met in a chunk of at most ``_CHUNK // n`` resamples; a ``stat`` reduces each block as it does a document
    bootstrap's. With every document its own cluster this is the document bootstrap (drawn differently).
    """
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    n = len(codes)
    if n < 1:
        raise MetricError("cannot bootstrap over 0 documents")
    if n_boot < 1:
        raise MetricError(f"n_boot must be >= 1, got {n_boot}")
    members = np.argsort(codes, kind="stable")  # documents grouped by cluster
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes  # where each cluster's documents begin in ``members``
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = max(1, _CHUNK // n)
    for first in range(0, n_boot, rows):
        draws = rng.integers(0, len(sizes), size=(min(rows, n_boot - first), len(sizes)))
        lengths = sizes[draws].sum(axis=1)
        for length in np.unique(lengths):
            picked = draws[lengths == length].ravel()
            counts = sizes[picked]
            # position p of the flat block lies in drawn cluster j: members[starts[j] + p - (documents before j)]
            shift = np.repeat(starts[picked] - (np.cumsum(counts) - counts), counts)
            yield members[np.arange(counts.sum()) + shift].reshape(-1, length)


def resamples(preds: Predictions, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap resamples of ``preds``' documents: whole clusters when it has cluster keys
    (:func:`cluster_bootstrap_chunks`), else single documents (:func:`bootstrap_chunks`)."""
    if preds.clusters is None:
        return bootstrap_chunks(preds.n, n_boot, seed)
    return cluster_bootstrap_chunks(preds.clusters, n_boot, seed)


def resampled_units(preds: Predictions) -> str:
    """What the bootstrap resamples, for definitions: ``documents``, or e.g. ``73 clusters (field premises) of
    204 documents, whole clusters drawn with replacement``; with few-shot draws, e.g. ``documents, each with its
    3 few-shot draws (50 documents, whole documents drawn with replacement)``."""
    if preds.clusters is None:
        return "documents"
    if preds.draws > 1 and not preds.cluster_by:
        return (f"documents, each with its {preds.draws} few-shot draws ({preds.documents} documents, whole "
                "documents drawn with replacement)")
    by = f" (field {preds.cluster_by})" if preds.cluster_by else ""
    each = f", each document with its {preds.draws} few-shot draws" if preds.draws > 1 else ""
    return (f"{len(set(preds.clusters))} clusters{by} of {preds.documents} documents{each}, whole clusters drawn "
            "with replacement")


def compute_metrics(names: Sequence[str], preds: Predictions, *, n_boot: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> dict[str, MetricResult]:
    """Point values and percentile-bootstrap intervals; all metrics share one set of resample indices.
    Predictions with cluster keys are resampled cluster by cluster (:func:`resamples`)."""
    if isinstance(names, str):
        names = [names]
    metrics = {nm: resolve_metric(nm) for nm in names}
    if preds.n == 0:
        raise MetricError("no documents to score (n = 0)")
    if not 0 < confidence < 1:
        raise MetricError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1 - confidence
    interval = (f"{confidence * 100:g}% percentile bootstrap over {resampled_units(preds)}, {n_boot} resamples, "
                f"seed {seed}")
    per_doc = {nm: m.per_doc(preds) for nm, m in metrics.items()}
    boot: dict[str, list[np.ndarray]] = {nm: [] for nm in metrics}
    for idx in resamples(preds, n_boot, seed):
        for nm, m in metrics.items():
            boot[nm].append(m.stat(per_doc[nm][idx], preds))
    out: dict[str, MetricResult] = {}
    for nm, m in metrics.items():
        value = float(m.stat(per_doc[nm][None, :], preds)[0])
        low, high = np.quantile(np.concatenate(boot[nm]), [alpha / 2, 1 - alpha / 2])
        out[nm] = MetricResult(nm, value, float(low), float(high), f"{m.describe(preds)}. Interval: {interval}.")
    return out


def confusion_counts(preds: Predictions) -> dict[str, dict[str, int]]:
    """{gold_label: {pred_label: count}}, with an extra "unparseable" column when any pred == -1."""
    cm = _confusion(_cell_codes(preds)[None, :], preds.n_classes)[0]
    cols = list(preds.labels) + (["unparseable"] if (preds.pred == UNPARSEABLE).any() else [])
    return {g: {c: int(cm[i, j]) for j, c in enumerate(cols)} for i, g in enumerate(preds.labels)}
