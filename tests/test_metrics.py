"""Metric tests: hand-computed cases as data (metric_cases.yaml) plus interval / registry tests."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from evalsuite.errors import MetricError
from evalsuite.scoring import metrics
from evalsuite.scoring.metrics import (
    METRICS,
    MetricResult,
    Predictions,
    bootstrap_chunks,
    bootstrap_indices,
    compute_metrics,
    average_ranks,
    confusion_counts,
    expected_score,
    resolve_metric,
)

CASES = yaml.safe_load((Path(__file__).parent / "metric_cases.yaml").read_text())


def make_preds(spec: dict) -> Predictions:
    spec = dict(spec)
    spec.setdefault("n_classes", len(spec["labels"]))
    for f in ("pred_text", "gold_text", "labels"):
        if f in spec:
            spec[f] = tuple(spec[f])
    return Predictions(**spec)


def _checks(case: dict) -> list[tuple[str, str]]:
    keys = set(case.get("expect", {})) | set(case.get("definition_contains", {})) | set(case.get("errors", {}))
    return [(case["id"], m) for m in sorted(keys)]


@pytest.mark.parametrize(("case_id", "metric"), [c for case in CASES for c in _checks(case)])
def test_metric_case(case_id: str, metric: str) -> None:
    case = next(c for c in CASES if c["id"] == case_id)
    preds = make_preds(case["preds"])
    if metric in case.get("errors", {}):
        with pytest.raises(MetricError, match=case["errors"][metric]):
            compute_metrics([metric], preds, n_boot=20)
        return
    res = compute_metrics([metric], preds, n_boot=20)[metric]
    if metric in case.get("expect", {}):
        assert res.value == pytest.approx(case["expect"][metric], abs=case.get("tol", 1e-12))
    for s in case.get("definition_contains", {}).get(metric, []):
        assert s in res.definition, (s, res.definition)
    assert "percentile bootstrap over documents, 20 resamples, seed 0" in res.definition


def test_every_metric_has_a_case() -> None:
    covered = {m for case in CASES for m in case.get("expect", {})}
    assert covered == set(METRICS)


# ---------------------------------------------------------------- reference implementation (loops)
def ref_f1_per_class(pred: list[int], gold: list[int], k: int) -> list[float]:
    out = []
    for c in range(k):
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        fp = sum(p == c and g != c for p, g in zip(pred, gold))
        fn = sum(p != c and g == c for p, g in zip(pred, gold))
        out.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return out


def ref_mcc(pred: list[int], gold: list[int], k: int) -> float:
    classes = list(range(k)) + [-1]
    s, c = len(gold), sum(p == g for p, g in zip(pred, gold))
    t = {x: gold.count(x) for x in classes}
    pc = {x: pred.count(x) for x in classes}
    num = c * s - sum(t[x] * pc[x] for x in classes)
    den = math.sqrt((s * s - sum(v * v for v in pc.values())) * (s * s - sum(v * v for v in t.values())))
    return num / den if den else 0.0


def ref_values(pred: list[int], gold: list[int], k: int, pos: int) -> dict[str, float]:
    f1s = ref_f1_per_class(pred, gold, k)
    return {"accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold),
            "unparseable_rate": pred.count(-1) / len(gold),
            "f1_macro": sum(f1s) / k, "f1": f1s[pos] if k == 2 else sum(f1s) / k, "mcc": ref_mcc(pred, gold, k)}


@st.composite
def random_preds(draw: st.DrawFn) -> Predictions:
    k = draw(st.integers(1, 4))
    n = draw(st.integers(1, 25))
    gold = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    pred = draw(st.lists(st.integers(-1, k - 1), min_size=n, max_size=n))
    pos = draw(st.sampled_from([None, *range(k)])) if k == 2 else None
    return Predictions(np.array(pred), np.array(gold), k, tuple(f"l{i}" for i in range(k)), positive=pos)


@settings(max_examples=150, deadline=None)
@given(random_preds())
def test_point_values_match_loop_reference(p: Predictions) -> None:
    res = compute_metrics(["accuracy", "unparseable_rate", "f1", "f1_macro", "mcc"], p, n_boot=5)
    ref = ref_values(p.pred.tolist(), p.gold.tolist(), p.n_classes, p.pos)
    for name, v in ref.items():
        assert res[name].value == pytest.approx(v, abs=1e-12), name


def test_vectorised_bootstrap_matches_loop_over_shared_resamples() -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.6, gold, rng.integers(-1, 3, 60))
    p = Predictions(pred, gold, 3, ("a", "b", "c"))
    res = compute_metrics(["accuracy", "f1", "mcc", "unparseable_rate"], p, n_boot=200, seed=7)
    idx = bootstrap_indices(60, 200, 7)  # the same indices every metric of the call used
    boots = [ref_values(pred[i].tolist(), gold[i].tolist(), 3, 1) for i in idx]
    for name in res:
        low, high = np.quantile([b[name] for b in boots], [0.025, 0.975])
        assert (res[name].low, res[name].high) == pytest.approx((low, high), abs=1e-12), name


# ---------------------------------------------------------------- intervals
def _random_binary(n: int, seed: int) -> Predictions:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.75, gold, np.where(rng.random(n) < 0.5, 1 - gold, -1))
    texts = tuple(str(g) for g in gold)
    yes = np.where(pred == 1, 0.5 + rng.random(n) / 2, rng.random(n) / 2)  # the predicted class is the likelier
    return Predictions(pred, gold, 2, ("no", "yes"), pred_norm=np.where(rng.random(n) < 0.8, gold, 1 - gold),
                       pred_text=tuple(str(x) for x in pred), gold_text=texts,
                       score=gold + rng.normal(0, 1, n), gold_score=gold + rng.random(n),
                       pred_flexible=np.where(pred >= 0, pred, np.where(rng.random(n) < 0.5, gold, -1)),
                       probs=np.stack([1 - yes, yes], axis=1),
                       n_correct=rng.integers(0, 5, n), n_samples=4)


def test_interval_contains_point_value() -> None:
    p = _random_binary(300, 0)
    for r in compute_metrics(list(METRICS), p).values():
        assert r.low <= r.value <= r.high, r
        assert r.high - r.low > 0, r


def test_same_seed_same_interval_other_seed_differs() -> None:
    p = _random_binary(150, 1)
    a, b = compute_metrics(["f1", "mcc"], p, seed=3), compute_metrics(["f1", "mcc"], p, seed=3)
    assert a == b
    c = compute_metrics(["f1", "mcc"], p, seed=4)
    assert (c["mcc"].low, c["mcc"].high) != (a["mcc"].low, a["mcc"].high)
    assert np.array_equal(bootstrap_indices(10, 5, 3), bootstrap_indices(10, 5, 3))
    assert np.array_equal(bootstrap_indices(10, 5, 3),
                          np.random.Generator(np.random.PCG64(3)).integers(0, 10, size=(5, 10)))


def test_interval_width_for_accuracy_half() -> None:
    # accuracy 0.5 with n=400: normal-approximation half-width 1.96*sqrt(.25/400) = 0.049
    gold = np.zeros(400, dtype=int)
    pred = np.tile([0, 1], 200)
    r = compute_metrics(["accuracy"], Predictions(pred, gold, 2, ("a", "b")))["accuracy"]
    assert r.value == 0.5
    assert (r.high - r.low) / 2 == pytest.approx(1.96 * math.sqrt(0.25 / 400), abs=0.01)


def test_interval_coverage_simulation() -> None:
    # 200 datasets, n=200 documents correct with probability 0.7; the 95% interval should cover 0.7 ~95%.
    t0 = time.perf_counter()
    rng = np.random.default_rng(12345)
    gold = np.zeros(200, dtype=int)
    hits = 0
    for s in range(200):
        pred = (rng.random(200) >= 0.7).astype(int)  # 0 (= gold) with probability 0.7
        r = compute_metrics(["accuracy"], Predictions(pred, gold, 2, ("a", "b")), n_boot=500, seed=s)["accuracy"]
        hits += r.low <= 0.7 <= r.high
    assert 0.90 <= hits / 200 <= 0.99
    assert time.perf_counter() - t0 < 3


def test_confidence_and_definition_of_interval() -> None:
    p = _random_binary(100, 2)
    r95 = compute_metrics(["accuracy"], p)["accuracy"]
    r80 = compute_metrics(["accuracy"], p, confidence=0.8, n_boot=300, seed=9)["accuracy"]
    assert r95.definition.endswith("Interval: 95% percentile bootstrap over documents, 1000 resamples, seed 0.")
    assert "80% percentile bootstrap over documents, 300 resamples, seed 9" in r80.definition
    assert r80.high - r80.low < r95.high - r95.low


def test_large_input_is_chunked() -> None:
    # 5000 docs x 1000 resamples = 5e6 gathered values -> more than one chunk; must equal a loop
    p = _random_binary(5000, 3)
    r = compute_metrics(["f1"], p, n_boot=1000, seed=1)["f1"]
    idx = bootstrap_indices(5000, 1000, 1)
    pred, gold = p.pred[idx], p.gold[idx]
    tp, fp, fn = ((pred == 1) & (gold == 1)).sum(1), ((pred == 1) & (gold != 1)).sum(1), ((pred != 1) & (gold == 1)).sum(1)
    assert (r.low, r.high) == pytest.approx(tuple(np.quantile(2 * tp / (2 * tp + fp + fn), [0.025, 0.975])), abs=1e-12)


def test_bootstrap_chunks_continue_one_random_stream(monkeypatch) -> None:
    # Blocks of an odd number of indices must give exactly the rows of one (n_boot, n) draw.
    monkeypatch.setattr(metrics, "_CHUNK", 15)
    chunks = list(bootstrap_chunks(5, 11, 3))
    assert [c.shape for c in chunks] == [(3, 5), (3, 5), (3, 5), (2, 5)]
    assert np.array_equal(np.concatenate(chunks), np.random.Generator(np.random.PCG64(3)).integers(0, 5, size=(11, 5)))
    p = _random_binary(41, 4)
    small = compute_metrics(["accuracy", "f1", "mcc"], p, n_boot=101, seed=2)
    monkeypatch.setattr(metrics, "_CHUNK", 1 << 22)
    assert compute_metrics(["accuracy", "f1", "mcc"], p, n_boot=101, seed=2) == small


# ---------------------------------------------------------------- registry, errors, helpers
def test_registry_and_unknown_metric() -> None:
    assert set(METRICS) == {"accuracy", "accuracy_norm", "f1", "f1_macro", "f1_binary", "mcc",
                            "exact_match", "unparseable_rate", "pearson", "spearman", "accuracy_flexible",
                            "unparseable_rate_flexible", "ece", "brier", "avg@k", "maj@k", "pass@k"}
    assert resolve_metric("mcc").name == "mcc"
    with pytest.raises(MetricError, match=r"'bleu'.*known metrics: accuracy, accuracy_flexible, accuracy_norm"):
        resolve_metric("bleu")
    with pytest.raises(MetricError, match="'bleu'"):
        compute_metrics(["accuracy", "bleu"], _random_binary(10, 0))


def test_empty_and_invalid_inputs() -> None:
    empty = Predictions(np.array([], dtype=int), np.array([], dtype=int), 2, ("a", "b"))
    with pytest.raises(MetricError, match="n = 0"):
        compute_metrics(["accuracy"], empty)
    with pytest.raises(MetricError):
        bootstrap_indices(0, 10, 0)
    with pytest.raises(MetricError, match="gold"):
        Predictions(np.array([0]), np.array([2]), 2, ("a", "b"))
    with pytest.raises(MetricError, match="pred"):
        Predictions(np.array([0, -2]), np.array([0, 1]), 2, ("a", "b"))
    with pytest.raises(MetricError, match="entries"):
        Predictions(np.array([0]), np.array([0, 1]), 2, ("a", "b"))
    with pytest.raises(MetricError, match="len\\(labels\\)"):
        Predictions(np.array([0]), np.array([0]), 3, ("a", "b"))
    with pytest.raises(MetricError, match="positive"):
        Predictions(np.array([0]), np.array([0]), 2, ("a", "b"), positive=2)
    with pytest.raises(MetricError, match="integers"):
        Predictions(np.array([0.5]), np.array([0]), 2, ("a", "b"))


def test_confusion_counts() -> None:
    case = next(c for c in CASES if c["id"] == "three_class_with_unparseable")
    assert confusion_counts(make_preds(case["preds"])) == {
        "x": {"x": 2, "y": 1, "z": 0, "unparseable": 0},
        "y": {"x": 0, "y": 2, "z": 0, "unparseable": 1},
        "z": {"x": 1, "y": 0, "z": 2, "unparseable": 1},
    }
    p = Predictions(np.array([0, 1]), np.array([1, 1]), 2, ("a", "b"))
    assert confusion_counts(p) == {"a": {"a": 0, "b": 0}, "b": {"a": 1, "b": 1}}


def test_result_to_dict_and_immutability() -> None:
    r = compute_metrics("accuracy", _random_binary(20, 0), n_boot=10)["accuracy"]
    assert isinstance(r, MetricResult)
    assert r.to_dict() == {"name": "accuracy", "value": r.value, "low": r.low, "high": r.high,
                           "definition": r.definition}
    p = _random_binary(5, 0)
    with pytest.raises(ValueError):
        p.pred[0] = 1


# ---------------------------------------------------------------- correlations (graded scores)
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 5, allow_nan=False)), min_size=3, max_size=40))
def test_correlations_match_scipy(pairs: list[tuple[int, float]]) -> None:
    from scipy import stats as scipy_stats  # a dev dependency
    gold = np.array([g for g, _ in pairs], dtype=float)
    score = np.array([s for _, s in pairs])
    p = Predictions(np.zeros(len(pairs), dtype=int), np.zeros(len(pairs), dtype=int), 1, ("r",),
                    score=score, gold_score=gold)
    res = compute_metrics(["pearson", "spearman"], p, n_boot=5)
    constant = np.ptp(score) == 0 or np.ptp(gold) == 0
    expected_p = 0.0 if constant else scipy_stats.pearsonr(score, gold)[0]
    expected_s = 0.0 if constant else scipy_stats.spearmanr(score, gold)[0]
    if np.isnan(expected_s):  # scipy gives nan where the ranks of one side are all tied
        expected_s = 0.0
    assert res["pearson"].value == pytest.approx(expected_p, abs=1e-9)
    assert res["spearman"].value == pytest.approx(expected_s, abs=1e-9)


def test_average_ranks_match_scipy() -> None:
    from scipy import stats as scipy_stats  # a dev dependency
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (50, 17)).astype(float)
    assert np.array_equal(average_ranks(x), scipy_stats.rankdata(x, axis=1))


def test_correlation_intervals_come_from_shared_resamples() -> None:
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 80)
    score = gold + rng.normal(0, 1.5, 80)
    p = Predictions(np.zeros(80, dtype=int), np.zeros(80, dtype=int), 1, ("r",), score=score, gold_score=gold)
    res = compute_metrics(["pearson", "spearman"], p, n_boot=300, seed=5)
    idx = bootstrap_indices(80, 300, 5)
    boots = [np.corrcoef(score[i], gold[i])[0, 1] for i in idx]
    assert (res["pearson"].low, res["pearson"].high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])),
                                                                      abs=1e-9)
    assert res["pearson"].low < res["pearson"].value < res["pearson"].high
    assert res["spearman"].low < res["spearman"].value < res["spearman"].high


def test_expected_score_is_the_softmax_weighted_value() -> None:
    # log-likelihoods log(0.2), log(0.3), log(0.5) -> 0.2*0 + 0.3*1 + 0.5*2 = 1.3, whatever the common offset
    logprobs = np.log([0.2, 0.3, 0.5])
    assert expected_score(logprobs, [0, 1, 2]) == pytest.approx(1.3, abs=1e-12)
    assert expected_score(logprobs - 700.0, [0, 1, 2]) == pytest.approx(1.3, abs=1e-12)  # no underflow
    assert expected_score([-1.0], [4.0]) == 4.0


def test_scores_are_checked() -> None:
    with pytest.raises(MetricError, match="score has 1 entries"):
        Predictions(np.array([0, 0]), np.array([0, 0]), 1, ("r",), score=[1.0], gold_score=[1.0, 2.0])
    with pytest.raises(MetricError, match="finite"):
        Predictions(np.array([0]), np.array([0]), 1, ("r",), score=[float("nan")], gold_score=[1.0])
