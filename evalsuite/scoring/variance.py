"""Where a task score's uncertainty comes from: documents, prompt variants, few-shot draws and sampling seeds.

:func:`variance_decomposition` takes per-document scores indexed by (document, and any of: prompt variant,
few-shot draw, seed) and estimates a **random-effects ANOVA** of them: every source is a random factor, crossed
with the others, with all interactions. Why this and not a bootstrap over every source: a run has few
variants, draws and seeds (typically 2–5 of each), and a bootstrap over 3 levels cannot represent the
uncertainty of their mean (it sees at most 10 distinct resamples and underestimates the spread by a factor
(L − 1)/L); the ANOVA's mean squares give unbiased variance components from any number of levels, and a
t interval with Satterthwaite's degrees of freedom widens as it should when a source has only a few levels.

Model, for a balanced array (every document scored under every combination of levels)::

    y = μ + Σ_T e_T,   e_T ~ (0, σ²_T) independent, over every non-empty set T of factors

The highest interaction (all factors) is not separable from the residual: it holds both. Estimates: the
method of moments on the balanced ANOVA's mean squares (E[MS_S] = Σ_{T ⊇ S} σ²_T · Π_{j ∉ T} L_j, inverted by
inclusion–exclusion), negative components set to 0. The variance of the task score (the grand mean) is
Var(ȳ) = Σ_T σ²_T / Π_{j ∈ T} L_j; the interval is ȳ ± t_{ν, 1−α/2} · √Var(ȳ) with ν by Satterthwaite.

The interval is for μ, the score expected over the populations the documents, variants, draws and seeds
stand for -- not for these particular variants. Few-shot draws made per document (a ``random`` sampler)
and per-document sampling seeds have no shared effect: their variation shows as an interaction with
documents, and the interval treats it so. Documents are taken as independent (a cluster field is not used).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalsuite.errors import MetricError

SOURCES = ("variant", "draw", "seed")  # the sources of variation besides documents, in axis order

PLURAL = {"document": "documents", "variant": "prompt variants", "draw": "few-shot draws", "seed": "sampling seeds"}
DEFINITION = ("Random-effects ANOVA of per-document scores over {factors}: every factor random and crossed with "
              "the others, with all their interactions (the highest one includes the residual); variance components "
              "by the method of moments on the balanced mean squares, negative estimates set to 0. Share: a term's "
              "part of the variance of the task score (the mean), Var = Σ_T σ²_T / Π_{{j ∈ T}} L_j with L_j the "
              "levels of factor j. {confidence:g}% interval: mean ± t(ν) · √Var, ν by Satterthwaite, for the score "
              "expected over {population} like these (not clipped to the metric's range).{dropped}")


def _listing(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@dataclass(frozen=True)
class VarianceTerm:
    """One source (``document``, ``variant``) or interaction (``document × variant``) of the decomposition."""

    name: str
    component: float  # σ²_T: the variance of this term's effect on one score
    contribution: float  # σ²_T / Π L_j: its part of the variance of the task score
    share: float  # contribution / Var(task score); 0 when that is 0
    df: int  # degrees of freedom of its mean square


@dataclass(frozen=True)
class VarianceDecomposition:
    """The task score with an interval over every source, and each source's part of its variance."""

    factors: tuple[str, ...]  # "document" first, then the sources with at least two levels
    levels: dict[str, int]  # levels of every factor given (a source with one level is left out of factors)
    mean: float
    low: float
    high: float
    se: float  # √Var(task score)
    df: float | None  # Satterthwaite degrees of freedom; None when the variance is 0
    document_se: float  # the standard error documents alone would give (variance of per-document means / n)
    terms: tuple[VarianceTerm, ...]
    definition: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _term_name(factors: Sequence[str], term: tuple[int, ...]) -> str:
    return " × ".join(factors[j] for j in term)


def variance_decomposition(scores: Any, sources: Sequence[str] = (), *,
                           confidence: float = 0.95) -> VarianceDecomposition:
    """Decompose the variance of a task score over documents and ``sources``.

    ``scores`` is an array of shape ``(documents, *levels)``: axis 0 the documents, then one axis per name in
    ``sources`` (``variant``, ``draw``, ``seed``, in that order, any subset), e.g. ``(n, 3, 3)`` with sources
    ``("variant", "draw")``. Every cell holds one document's score (0/1 correctness, or any number) under
    that combination. A source with a single level is kept in ``levels`` but cannot be estimated: it is left
    out, and the definition says so.
    """
    sources = tuple(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or len(set(sources)) != len(sources) or list(sources) != sorted(sources, key=SOURCES.index):
        raise MetricError(f"variance sources must be distinct names among {', '.join(SOURCES)}, in that order; "
                          f"got {list(sources)}")
    try:
        y = np.array(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise MetricError("variance decomposition: scores must be a numeric array") from None
    if y.ndim != 1 + len(sources):
        raise MetricError(f"variance decomposition: scores have {y.ndim} axes but documents and {len(sources)} "
                          f"source(s) {list(sources)} make {1 + len(sources)}")
    if not np.isfinite(y).all():
        raise MetricError("variance decomposition: every document needs a finite score under every combination "
                          "of variant, draw and seed (a balanced array): fill or drop the incomplete documents")
    if y.shape[0] < 2:
        raise MetricError(f"variance decomposition needs at least 2 documents, got {y.shape[0]}")
    if not 0 < confidence < 1:
        raise MetricError(f"confidence must be in (0, 1), got {confidence}")
    names = ("document", *sources)
    levels = dict(zip(names, y.shape))
    dropped = [s for s in sources if levels[s] < 2]
    if dropped:
        y = y.reshape([n for name, n in levels.items() if name not in dropped])
    factors = tuple(name for name in names if name not in dropped)
    return _anova(y, factors, levels, dropped, confidence)


def _anova(y: np.ndarray, factors: tuple[str, ...], levels: dict[str, int], dropped: list[str],
           confidence: float) -> VarianceDecomposition:
    r, size, shape = y.ndim, y.size, y.shape
    terms = [t for k in range(1, r + 1) for t in itertools.combinations(range(r), k)]
    means = {s: y.mean(axis=tuple(j for j in range(r) if j not in s), keepdims=True)
             for k in range(r + 1) for s in itertools.combinations(range(r), k)}
    ms, dof = {}, {}
    for t in terms:
        # the term's effect: inclusion–exclusion over the marginal means of its subsets
        effect = sum((-1) ** (len(t) - len(s)) * means[s] for k in range(len(t) + 1)
                     for s in itertools.combinations(t, k))
        dof[t] = math.prod(shape[j] - 1 for j in t)
        ms[t] = float((np.broadcast_to(effect, shape) ** 2).sum()) / dof[t]

    def outside(t: tuple[int, ...]) -> int:
        return math.prod(shape[j] for j in range(r) if j not in t)

    supersets = {t: [s for s in terms if set(t) <= set(s)] for t in terms}
    raw = {t: sum((-1) ** (len(s) - len(t)) * ms[s] for s in supersets[t]) / outside(t) for t in terms}
    kept = {t for t in terms if raw[t] > 0}
    component = {t: raw[t] if t in kept else 0.0 for t in terms}
    contribution = {t: component[t] * outside(t) / size for t in terms}  # σ²_T / Π_{j∈T} L_j
    var = sum(contribution.values())
    # Var(ȳ) as a combination Σ c_S MS_S of the mean squares of the kept components, for Satterthwaite's ν
    coef = {s: sum((-1) ** (len(s) - len(t)) for t in kept if set(t) <= set(s)) / size for s in terms}
    denominator = sum((coef[s] * ms[s]) ** 2 / dof[s] for s in terms)
    df = var**2 / denominator if var > 0 and denominator > 0 else None
    mean = float(y.mean())
    se = math.sqrt(var)
    from scipy.stats import t as student_t  # the one quantile numpy lacks

    half = float(student_t.ppf(0.5 + confidence / 2, df)) * se if df is not None else 0.0
    document_means = y.reshape(shape[0], -1).mean(axis=1)
    counted = [f"{PLURAL[name]} ({'n = ' if name == 'document' else ''}{levels[name]})" for name in factors]
    note = "".join(f" Only one {PLURAL[name][:-1]}: the variance of {PLURAL[name]} cannot be estimated and is "
                   "not included." for name in dropped)
    definition = DEFINITION.format(factors=_listing(counted), population=_listing([PLURAL[f] for f in factors]),
                                   confidence=confidence * 100, dropped=note)
    return VarianceDecomposition(
        factors=factors, levels=levels, mean=mean, low=mean - half, high=mean + half, se=se, df=df,
        document_se=float(document_means.std(ddof=1) / math.sqrt(shape[0])),
        terms=tuple(VarianceTerm(_term_name(factors, t), component[t], contribution[t],
                                 contribution[t] / var if var > 0 else 0.0, dof[t]) for t in terms),
        definition=definition)
