"""Variance decomposition over documents, prompt variants, few-shot draws and seeds (random-effects ANOVA)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evalsuite.errors import MetricError
from evalsuite.scoring.variance import variance_decomposition


def _terms(d):
    return {t.name: t for t in d.terms}


def test_documents_alone_give_the_classical_t_interval():
    x = np.random.default_rng(0).random(40) < 0.6
    d = variance_decomposition(x)
    low, high = scipy_stats.t.interval(0.95, 39, loc=x.mean(), scale=scipy_stats.sem(x))
    assert (d.mean, d.low, d.high, d.df) == pytest.approx((x.mean(), low, high, 39))
    assert d.se == pytest.approx(d.document_se) and [t.name for t in d.terms] == ["document"]
    assert _terms(d)["document"].share == 1.0


def test_additive_effects_without_noise_are_recovered_exactly():
    """y = a_doc + b_variant + c_draw: each main-effect component is its effects' sample variance, every
    interaction is 0, and Var(mean) = Σ component / levels."""
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(0, 1, 30), rng.normal(0, 0.5, 4), rng.normal(0, 0.2, 3)
    y = a[:, None, None] + b[None, :, None] + c[None, None, :]
    d = variance_decomposition(y, ("variant", "draw"))
    terms = _terms(d)
    assert terms["document"].component == pytest.approx(a.var(ddof=1))
    assert terms["variant"].component == pytest.approx(b.var(ddof=1))
    assert terms["draw"].component == pytest.approx(c.var(ddof=1))
    for name in ("document × variant", "document × draw", "variant × draw", "document × variant × draw"):
        assert terms[name].component == pytest.approx(0, abs=1e-12)
    var = a.var(ddof=1) / 30 + b.var(ddof=1) / 4 + c.var(ddof=1) / 3
    assert d.se**2 == pytest.approx(var) and sum(t.share for t in d.terms) == pytest.approx(1)
    assert terms["variant"].share == pytest.approx(b.var(ddof=1) / 4 / var)
    assert terms["document"].df == 29 and terms["variant × draw"].df == 6


def test_two_way_variance_matches_the_mean_square_formula():
    """With every component positive, Var(mean) = (MS_doc + MS_variant − MS_interaction) / N."""
    rng = np.random.default_rng(2)
    y = rng.normal(0, 1, (25, 1)) + rng.normal(0, 1, (1, 5)) + rng.normal(0, 0.5, (25, 5))
    n, v = y.shape
    grand = y.mean()
    ms_doc = v * ((y.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_var = n * ((y.mean(axis=0) - grand) ** 2).sum() / (v - 1)
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand
    ms_res = (resid**2).sum() / ((n - 1) * (v - 1))
    d = variance_decomposition(y, ("variant",))
    assert all(t.component > 0 for t in d.terms)
    assert d.se**2 == pytest.approx((ms_doc + ms_var - ms_res) / y.size)
    parts = [ms_doc / (n * v), ms_var / (n * v), -ms_res / (n * v)]
    dfs = [n - 1, v - 1, (n - 1) * (v - 1)]
    assert d.df == pytest.approx(sum(parts) ** 2 / sum(p**2 / f for p, f in zip(parts, dfs)))


def test_components_are_unbiased_and_the_interval_covers_on_known_sources():
    """Synthetic scores with known variance components for documents, variants, draws and seeds: averaged over
    replicate data sets the estimates match them, and the 95% interval covers the true mean about 95% of the
    time, where documents alone would not."""
    rng = np.random.default_rng(3)
    sd = {"document": 1.0, "variant": 0.6, "draw": 0.4, "seed": 0.3, "document × variant × draw × seed": 0.8}
    shape = (60, 3, 3, 2)
    estimates, covered, covered_documents, reps = [], 0, 0, 300
    for _ in range(reps):
        y = (rng.normal(0, sd["document"], (60, 1, 1, 1)) + rng.normal(0, sd["variant"], (1, 3, 1, 1))
             + rng.normal(0, sd["draw"], (1, 1, 3, 1)) + rng.normal(0, sd["seed"], (1, 1, 1, 2))
             + rng.normal(0, sd["document × variant × draw × seed"], shape))
        d = variance_decomposition(y, ("variant", "draw", "seed"))
        estimates.append({t.name: t.component for t in d.terms})
        covered += d.low <= 0 <= d.high
        covered_documents += abs(d.mean) <= 1.96 * d.document_se
    for name, s in sd.items():
        assert np.mean([e[name] for e in estimates]) == pytest.approx(s**2, rel=0.15), name
    assert np.mean([e["variant × draw"] for e in estimates]) < 0.05
    assert 0.91 <= covered / reps <= 0.99
    assert covered_documents / reps < 0.75


def test_a_source_with_one_level_is_left_out_and_said():
    y = np.random.default_rng(4).random((20, 3, 1))
    d = variance_decomposition(y, ("variant", "draw"))
    assert d.factors == ("document", "variant") and d.levels == {"document": 20, "variant": 3, "draw": 1}
    assert "Only one few-shot draw" in d.definition
    assert "documents (n = 20) and prompt variants (3)" in d.definition
    json.dumps(d.to_dict(), allow_nan=False)


def test_constant_scores_give_a_zero_width_interval_without_nan():
    d = variance_decomposition(np.ones((10, 2)), ("seed",))
    assert (d.low, d.high, d.se, d.df) == (1.0, 1.0, 0.0, None)
    assert all(t.share == 0 and not math.isnan(t.component) for t in d.terms)
    json.dumps(d.to_dict(), allow_nan=False)


@pytest.mark.parametrize("scores, sources, message", [
    (np.ones((5, 2)), ("prompt",), "distinct names among variant, draw, seed"),
    (np.ones((5, 2, 2)), ("draw", "variant"), "in that order"),
    (np.ones((5, 2)), ("variant", "draw"), "scores have 2 axes but documents and 2 source"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), ("variant",), "balanced array"),
    (np.ones((1, 3)), ("variant",), "at least 2 documents"),
    ([["a", "b"], ["c", "d"]], ("variant",), "numeric array"),
])
def test_bad_input_gets_one_clear_message(scores, sources, message):
    with pytest.raises(MetricError, match=message):
        variance_decomposition(scores, sources)


def test_coverage_simulation_prints_its_table(monkeypatch, capsys):
    """benchmarks/coverage.py on a few simulated tasks: one row per interval, and the document-only interval
    misses the true accuracy far more often than 5% once prompt variants and draws vary."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "coverage.py"
    spec = importlib.util.spec_from_file_location("coverage_simulation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["coverage.py", "--reps", "40", "--bootstrap", "200"])
    module.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| (")]
    assert [(r[0][2:], r[1]) for r in rows] == [
        ("(a) independent documents", "document bootstrap"), ("(a) independent documents", "ANOVA t (documents)"),
        ("(b) clustered documents", "document bootstrap"), ("(b) clustered documents", "cluster bootstrap"),
        ("(c) prompt variants and few-shot draws", "document bootstrap"),
        ("(c) prompt variants and few-shot draws", "multi-source ANOVA t")]
    coverage = {(r[0][2:], r[1]): float(r[3].rstrip("%")) for r in rows}
    assert coverage["(c) prompt variants and few-shot draws", "document bootstrap"] < 80
    assert coverage["(c) prompt variants and few-shot draws", "multi-source ANOVA t"] >= 85
