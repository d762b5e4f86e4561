"""How often evalsuite's 95% intervals cover a task's true accuracy, on simulated tasks where it is known.

Each simulated document's correctness is a threshold model, ``correct = [α + Σ effects + ε > 0]`` with normal
effects and ε ~ N(0, 1), so the true accuracy (over documents and every other source drawn the same way) is
exactly Φ(α / √(1 + Σ σ²)). Scenarios:

- (a) independent documents: 200 documents, no other source.
- (b) clustered documents: 100 clusters (stories, passages) of 1–5 documents sharing an effect (σ = 1.5), about
  300 documents. The document bootstrap treats them as independent; the cluster bootstrap resamples clusters.
- (c) prompt variants and few-shot draws: 200 documents, each scored under 3 prompt variants × 3 few-shot
  draws (the same examples for every document, as the ``fixed`` sampler), with variant, draw and interaction
  effects. The document-only interval resamples documents of their mean score over the 9 cells; the
  multi-source interval is :func:`evalsuite.scoring.variance.variance_decomposition`'s.

Intervals are computed by the library's own code (``compute_metrics``, ``resamples``, ``variance_decomposition``),
seeded. Printed: coverage of each interval, its Monte Carlo standard error and the mean width; an interval
fit for its scenario should cover 93–97%.

    python benchmarks/coverage.py                 # 2000 simulated tasks per scenario, 1000 resamples each
    python benchmarks/coverage.py --reps 500      # quicker, coarser
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.stats import norm

from evalsuite.scoring import Predictions, compute_metrics
from evalsuite.scoring.metrics import bootstrap_chunks, document_mean
from evalsuite.scoring.variance import variance_decomposition

ALPHA = 0.3  # latent intercept: true accuracies of about 0.55–0.6


def _accuracy_interval(correct: np.ndarray, n_boot: int, seed: int, clusters=None) -> tuple[float, float]:
    """evalsuite's accuracy interval of 0/1 correctness flags (over clusters when keys are given)."""
    gold = np.zeros(len(correct), dtype=np.int64)
    preds = Predictions(pred=np.where(correct, 0, 1), gold=gold, n_classes=2, labels=("right", "wrong"),
                        clusters=clusters)
    result = compute_metrics(["accuracy"], preds, n_boot=n_boot, seed=seed)["accuracy"]
    return result.low, result.high


def _document_interval(per_document: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap over documents of per-document mean scores (what resampling documents alone gives)."""
    boot = np.concatenate([document_mean(per_document[idx], None) for idx in bootstrap_chunks(len(per_document),
                                                                                              n_boot, seed)])
    low, high = np.quantile(boot, [0.025, 0.975])
    return float(low), float(high)


def independent(rng: np.random.Generator, rep: int, n_boot: int) -> tuple[float, dict[str, tuple[float, float]]]:
    n = 200
    correct = ALPHA + rng.normal(0, 1, n) > 0
    decomposition = variance_decomposition(correct.astype(float))
    return norm.cdf(ALPHA), {"document bootstrap": _accuracy_interval(correct, n_boot, rep),
                             "ANOVA t (documents)": (decomposition.low, decomposition.high)}


def clustered(rng: np.random.Generator, rep: int, n_boot: int) -> tuple[float, dict[str, tuple[float, float]]]:
    clusters, sd = 100, 1.5
    sizes = rng.integers(1, 6, clusters)
    shared = np.repeat(rng.normal(0, sd, clusters), sizes)
    correct = ALPHA + shared + rng.normal(0, 1, sizes.sum()) > 0
    keys = tuple(np.repeat([f"c{k}" for k in range(clusters)], sizes))
    return norm.cdf(ALPHA / math.sqrt(1 + sd**2)), {
        "document bootstrap": _accuracy_interval(correct, n_boot, rep),
        "cluster bootstrap": _accuracy_interval(correct, n_boot, rep, keys)}


SOURCES_SD = {"document": 1.0, "variant": 0.3, "draw": 0.2, "variant × draw": 0.1, "document × variant": 0.3}


def variants_and_draws(rng: np.random.Generator, rep: int,
                       n_boot: int) -> tuple[float, dict[str, tuple[float, float]]]:
    n, variants, draws = 200, 3, 3
    sd = SOURCES_SD
    latent = (ALPHA + rng.normal(0, sd["document"], (n, 1, 1)) + rng.normal(0, sd["variant"], (1, variants, 1))
              + rng.normal(0, sd["draw"], (1, 1, draws)) + rng.normal(0, sd["variant × draw"], (1, variants, draws))
              + rng.normal(0, sd["document × variant"], (n, variants, 1)) + rng.normal(0, 1, (n, variants, draws)))
    correct = (latent > 0).astype(float)
    decomposition = variance_decomposition(correct, ("variant", "draw"))
    truth = norm.cdf(ALPHA / math.sqrt(1 + sum(s**2 for s in sd.values())))
    return truth, {"document bootstrap": _document_interval(correct.mean(axis=(1, 2)), n_boot, rep),
                   "multi-source ANOVA t": (decomposition.low, decomposition.high)}


SCENARIOS = {
    "(a) independent documents": (independent, ("document bootstrap", "ANOVA t (documents)")),
    "(b) clustered documents": (clustered, ("cluster bootstrap",)),
    "(c) prompt variants and few-shot draws": (variants_and_draws, ("multi-source ANOVA t",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2000, help="simulated tasks per scenario")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per interval")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for s, (name, (simulate, fit)) in enumerate(SCENARIOS.items()):
        rng = np.random.default_rng([args.seed, s])
        hits: dict[str, int] = {}
        widths: dict[str, float] = {}
        for rep in range(args.reps):
            truth, intervals = simulate(rng, rep, args.bootstrap)
            for label, (low, high) in intervals.items():
                hits[label] = hits.get(label, 0) + (low <= truth <= high)
                widths[label] = widths.get(label, 0.0) + (high - low)
        for label in hits:
            coverage = hits[label] / args.reps
            rows.append((name, label, "yes" if label in fit else "no", coverage,
                         math.sqrt(coverage * (1 - coverage) / args.reps), widths[label] / args.reps))
    print(f"Coverage of nominal 95% intervals: {args.reps} simulated tasks per scenario, {args.bootstrap} "
          f"bootstrap resamples, seed {args.seed}\n")
    print("| scenario | interval | fit for it | coverage | ± MC s.e. | mean width |")
    print("|---|---|---|---|---|---|")
    for name, label, fit, coverage, se, width in rows:
        print(f"| {name} | {label} | {fit} | {coverage:.1%} | {se:.1%} | {width:.3f} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
