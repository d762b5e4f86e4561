"""Paired tests, Holm, Kendall's tau-b and Fleiss' kappa against values worked out by hand or by scipy,
and simulations showing that the 95% intervals cover about 95% of the time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalsuite.scoring import Predictions, compute_metrics
from evalsuite.scoring.stats import (
    fleiss_kappa,
    holm,
    kendall_tau_b,
    mcnemar_exact,
    paired_bootstrap,
    paired_test,
)


def preds(pred, gold, labels=("no", "yes")) -> Predictions:
    return Predictions(pred=np.asarray(pred), gold=np.asarray(gold), n_classes=len(labels), labels=labels)


def from_table(both: int, only_a: int, only_b: int, neither: int) -> tuple[Predictions, Predictions]:
    """A 2×2 McNemar table as two prediction sets over the same documents (gold is always class 1)."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    gold = [1] * len(a)
    return preds(a, gold), preds(b, gold)


@pytest.mark.parametrize("b, c, expected", [
    (1, 9, 22 / 1024),              # 2 · (C(10,0) + C(10,1)) / 2^10 = 2 · 11/1024; scipy binomtest(1, 10): 0.021484375
    (9, 1, 22 / 1024),              # symmetric
    (0, 5, 2 / 32),                 # 2 · 1/2^5 = 0.0625; scipy binomtest(0, 5): 0.0625
    (10, 20, 0.09873714670538905),  # 2 · Σ_{k≤10} C(30,k) / 2^30; scipy binomtest(10, 30): 0.09873714670538905
    (3, 3, 1.0),                    # 2 · 42/64 > 1, capped at 1
    (0, 0, 1.0),                    # no discordant pairs: no evidence either way
])
def test_mcnemar_exact_hand_tables(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, abs=1e-15)


def test_paired_test_uses_mcnemar_for_accuracy() -> None:
    a, b = from_table(both=20, only_a=9, only_b=1, neither=10)
    result = paired_test("accuracy", a, b, n_boot=2000)
    assert result.test == "exact McNemar"
    assert (result.only_a, result.only_b, result.n) == (9, 1, 40)
    assert result.p_value == pytest.approx(22 / 1024)
    assert result.value_a == pytest.approx(29 / 40) and result.value_b == pytest.approx(21 / 40)
    assert result.diff == pytest.approx(8 / 40)
    assert result.low < result.diff < result.high
    assert "McNemar" in result.definition and "2000 resamples" in result.definition


def test_paired_bootstrap_identical_and_dominating() -> None:
    a, _ = from_table(both=10, only_a=15, only_b=0, neither=5)
    diff, low, high, p = paired_bootstrap("f1", a, a, n_boot=999)
    assert (diff, low, high, p) == (0.0, 0.0, 0.0, 1.0)  # no difference at all: p = 1
    right = preds([1, 0] * 25, [1, 0] * 25)
    wrong = preds([0, 1] * 25, [1, 0] * 25)
    diff, low, high, p = paired_bootstrap("accuracy", right, wrong, n_boot=999)
    assert (diff, low, high) == (1.0, 1.0, 1.0)
    assert p == pytest.approx(1 / 1000)  # no resample is as extreme as 0 under the null: the smallest p


def test_paired_bootstrap_matches_normal_theory() -> None:
    """A known case: for accuracy the difference is the mean of d_i ∈ {−1, 0, 1}; with 130 documents only A gets
    right, 100 only B, 770 both or neither (n = 1000), δ = 0.03 and se = sqrt((0.23 − 0.03²)/1000) = 0.015136,
    so the normal-theory interval is [0.00033, 0.05967]. The resampled differences live on a lattice of step
    1/1000 and the test counts |δ* − δ| ≥ δ, so the normal p-value takes a continuity correction:
    2 · P(Z ≥ 29.5 / 15.136) = 0.0513 (sd of the estimate over seeds at B = 20000: about 0.0016)."""
    a, b = from_table(both=400, only_a=130, only_b=100, neither=370)
    diff, low, high, p = paired_bootstrap("accuracy", a, b, n_boot=20000, seed=1)
    assert diff == pytest.approx(0.03)
    assert low == pytest.approx(0.00033, abs=0.003) and high == pytest.approx(0.05967, abs=0.003)
    assert p == pytest.approx(0.0513, abs=0.006)


def test_paired_bootstrap_f1_point_values_and_symmetry() -> None:
    gold = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    a = preds([1, 1, 1, 0, 0, 0, 0, 1, 1, 0], gold)  # TP 4, FP 1, FN 1: F1 = 8/10
    b = preds([1, 0, 0, 0, 0, 0, 1, 1, 1, 0], gold)  # TP 2, FP 2, FN 3: F1 = 4/9
    result = paired_test("f1", a, b, n_boot=4000, seed=3)
    assert result.test == "paired bootstrap" and result.only_a is None
    assert result.value_a == pytest.approx(0.8) and result.value_b == pytest.approx(4 / 9)
    assert result.diff == pytest.approx(0.8 - 4 / 9)
    back = paired_test("f1", b, a, n_boot=4000, seed=3)  # same resamples: everything mirrors exactly
    assert back.diff == pytest.approx(-result.diff)
    assert (back.low, back.high) == pytest.approx((-result.high, -result.low))
    assert back.p_value == pytest.approx(result.p_value)


def test_paired_test_rejects_different_documents() -> None:
    a = preds([1, 0, 1], [1, 0, 1])
    with pytest.raises(Exception, match="same documents"):
        paired_test("accuracy", a, preds([1, 0], [1, 0]))
    with pytest.raises(Exception, match="gold"):
        paired_test("accuracy", a, preds([1, 0, 1], [0, 0, 1]))


def test_holm_textbook_example() -> None:
    """m = 4, p = (0.01, 0.04, 0.03, 0.005). Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06,
    0.04·1 = 0.04 → running max 0.06. At α = 0.05 Holm rejects the first two only (0.005 and 0.01)."""
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p <= 0.05 for p in adjusted] == [True, False, False, True]
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, float("nan"), 0.04])  # NaN is not a test: m = 2
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_kendall_tau_b_hand_values() -> None:
    # y = (3, 1, 2, 5, 4): of the 10 pairs, 7 concordant and 3 discordant: (7 − 3)/10
    assert kendall_tau_b([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx(0.4)
    # ties: 4 concordant, 0 discordant, one pair tied in x only, one in y only: 4 / sqrt(5 · 5)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2], [2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1.0], [1.0]))


def test_fleiss_kappa_textbook_example() -> None:
    """Fleiss (1971) as worked in Wikipedia's 'Fleiss' kappa': 10 items, 14 raters, 5 categories, κ = 0.210."""
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = np.array([[k for k, c in enumerate(row) for _ in range(c)] for row in counts])
    assert fleiss_kappa(ratings) == pytest.approx(0.2099, abs=5e-4)
    assert fleiss_kappa(np.array([[0, 0], [1, 1], [0, 0]])) == pytest.approx(1.0)  # perfect agreement


def test_accuracy_interval_coverage() -> None:
    """The leaderboard's 95% percentile-bootstrap interval for accuracy covers the true value about 95% of the
    time: 400 simulated evaluations of n = 200 documents with true accuracy 0.7 (binomial sd of the rate ≈ 0.011)."""
    rng = np.random.default_rng(11)
    hits = 0
    for rep in range(400):
        correct = rng.random(200) < 0.7
        p = preds(np.where(correct, 1, 0), np.ones(200, dtype=int))
        m = compute_metrics(["accuracy"], p, n_boot=400, seed=rep)["accuracy"]
        hits += m.low <= 0.7 <= m.high
    assert 0.92 <= hits / 400 <= 0.975


def test_paired_difference_interval_coverage_and_mcnemar_size() -> None:
    """Paired documents with P(both right) = 0.5, P(only A) = 0.2, P(only B) = 0.1: true difference 0.1. The 95%
    paired-bootstrap interval covers it about 95% of the time; under the null (only A = only B = 0.15) exact
    McNemar rejects at most about 5% of the time (it is exact, hence slightly conservative)."""
    rng = np.random.default_rng(12)

    def simulate(probs: list[float], n: int) -> tuple[Predictions, Predictions]:
        both, only_a, only_b, neither = rng.multinomial(n, probs)
        return from_table(both, only_a, only_b, neither)

    covered = 0
    for rep in range(400):
        a, b = simulate([0.5, 0.2, 0.1, 0.2], 200)
        _, low, high, _ = paired_bootstrap("accuracy", a, b, n_boot=400, seed=rep)
        covered += low <= 0.1 <= high
    assert 0.92 <= covered / 400 <= 0.975
    rejected = sum(paired_test("accuracy", *simulate([0.45, 0.15, 0.15, 0.25], 200), n_boot=1).p_value <= 0.05
                   for _ in range(400))
    assert 0.01 <= rejected / 400 <= 0.065
