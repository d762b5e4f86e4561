"""Calibration of the choice probabilities: ece and brier by hand, their bins and intervals, which runs get them,
and the report's Calibration section with its reliability diagrams."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import evaluation, pattern, samples, write_run

from evalsuite.api import evaluate
from evalsuite.cli import main
from evalsuite.engines import ContinuationScore
from evalsuite.errors import MetricError
from evalsuite.results import read_run
from evalsuite.results.records import Outcome, Sample, predictions
from evalsuite.scoring import Predictions, choice_probabilities, compute_metrics, metrics_for, reliability
from evalsuite.scoring.metrics import cluster_bootstrap_chunks, confidence_bins, expected_calibration_error
from evalsuite.scoring.stats import paired_test

CALIBRATION = ["ece", "brier"]


def binary(confidence, correct, **extra) -> Predictions:
    """Two-choice predictions with gold 0: choice 0 predicted where ``correct``, else choice 1, either with
    probability ``confidence``."""
    conf = np.asarray(confidence, dtype=float)
    pred = np.where(correct, 0, 1)
    probs = np.stack([np.where(pred == 0, conf, 1 - conf), np.where(pred == 0, 1 - conf, conf)], axis=1)
    return Predictions(pred, np.zeros(len(conf), dtype=int), 2, ("a", "b"), probs=probs, **extra)


# ------------------------------------------------------------------------------------------ values by hand
def test_two_documents_by_hand():
    # d0: p = [.9, .1], gold 0 (right): brier .01 + .01 = .02; d1: p = [.6, .4], gold 1 (wrong): .36 + .36 = .72
    # ece: bin (.8, .9] holds d0, |1 - .9| = .1; bin (.5, .6] holds d1, |0 - .6| = .6 -> (.1 + .6) / 2 = .35
    res = compute_metrics(CALIBRATION, binary([0.9, 0.6], [True, False]), n_boot=50)
    assert res["ece"].value == pytest.approx(0.35, abs=1e-12)
    assert res["brier"].value == pytest.approx(0.37, abs=1e-12)


def test_a_perfectly_calibrated_set_has_no_calibration_error():
    # in each bin the share of right answers is exactly the confidence: 55 of 100 at .55, ..., 95 of 100 at .95
    confidence = np.repeat([0.55, 0.65, 0.75, 0.85, 0.95], 100)
    correct = np.concatenate([np.arange(100) < round(c * 100) for c in (0.55, 0.65, 0.75, 0.85, 0.95)])
    res = compute_metrics(CALIBRATION, binary(confidence, correct), n_boot=200)
    assert res["ece"].value == pytest.approx(0.0, abs=1e-12)
    assert 0 < res["ece"].high < 0.1  # resampling the 500 documents moves the bins' accuracy a little
    counts, mean_conf, accuracy = reliability(confidence, correct)
    assert counts.tolist() == [0] * 5 + [100] * 5
    assert np.allclose(accuracy[5:], mean_conf[5:]) and np.isnan(accuracy[:5]).all()


def test_an_over_confident_set_has_a_large_calibration_error():
    # 95% sure every time, right half of the time: ece .45; brier mean of 2(.05)² = .005 and 2(.95)² = 1.805
    correct = pattern(200, 100)
    res = compute_metrics(CALIBRATION, binary([0.95] * 200, correct), n_boot=200)
    assert res["ece"].value == pytest.approx(0.45, abs=1e-12)
    assert res["brier"].value == pytest.approx(0.905, abs=1e-12)
    assert res["ece"].low > 0.3


def test_bin_edges_belong_to_the_bin_below():
    assert confidence_bins(np.array([0.0, 0.1, 0.1000001, 0.2, 0.3, 0.7, 0.70000001, 1.0])).tolist() == [
        0, 0, 1, 1, 2, 6, 7, 9]
    # Ten equally likely choices: a confidence of exactly 0.1, right (gap +0.9). With a wrong answer at 0.15
    # (gap -0.15) in bin 1: ece = (0.9 + 0.15) / 2 = 0.525; were 0.1 in bin 1 too, it would be |0.9 - 0.15| / 2.
    probs = [[0.1] * 10, [0.15] + [0.85 / 9] * 9]
    preds = Predictions(np.array([0, 0]), np.array([0, 1]), 10, tuple("abcdefghij"), probs=probs)
    assert compute_metrics(["ece"], preds, n_boot=10)["ece"].value == pytest.approx(0.525, abs=1e-12)


def test_probabilities_are_the_softmax_of_the_summed_log_likelihoods():
    p = choice_probabilities([-1.0, -2.0, -4.0])
    assert p == pytest.approx(np.exp([-1.0, -2.0, -4.0]) / np.exp([-1.0, -2.0, -4.0]).sum(), abs=1e-15)
    # a document with fewer choices than the widest: probability 0 for the choices it lacks
    wide = Sample("t", "v", 0, (), ("a", "b", "c"), 0, 0, "a", logprobs=(-1.0, -2.0, -4.0))
    narrow = Sample("t", "v", 1, (), ("a", "b"), 1, 1, "b", logprobs=(-3.0, -1.0))
    head = Sample("t", "head", 2, (), ("a", "b", "c"), 2, 2, "c", label_logprobs=(math.log(0.2), math.log(0.3),
                                                                                 math.log(0.5)))
    preds = predictions([Outcome.of(s) for s in (wide, narrow, head)], ("a", "b", "c"), None)
    assert preds.probs[1].tolist() == pytest.approx([1 / (1 + math.e**2), 1 / (1 + math.e**-2), 0.0])
    assert preds.probs[2].tolist() == pytest.approx([0.2, 0.3, 0.5])
    generated = Sample("t", "cot", 0, (), ("a", "b"), 0, 0, "a", generation="Answer: a", extracted="a")
    assert predictions([Outcome.of(generated)], ("a", "b"), None).probs is None


def test_probabilities_must_be_probability_rows():
    for bad, says in [([[0.5, 0.6]], "rows sum to 1"), ([[0.5, 0.5, 0.0]], "shape"), ([[1.5, -0.5]], r"\[0, 1\]")]:
        with pytest.raises(MetricError, match=says):
            Predictions(np.array([0]), np.array([0]), 2, ("a", "b"), probs=bad)


# ------------------------------------------------------------------------------------------ intervals
def test_intervals_contain_the_point_value():
    rng = np.random.default_rng(3)
    confidence = 0.5 + rng.random(300) / 2
    correct = rng.random(300) < confidence - 0.1  # a little over-confident
    for r in compute_metrics(CALIBRATION, binary(confidence, correct), n_boot=500).values():
        assert r.low <= r.value <= r.high and r.high > r.low, r
        assert "percentile bootstrap over documents, 500 resamples" in r.definition


def test_intervals_resample_whole_clusters_when_given():
    # 20 clusters of 5 identical documents: resampling clusters is resampling 20 units, not 100 documents
    rng = np.random.default_rng(5)
    confidence = np.repeat(0.5 + rng.random(20) / 2, 5)
    correct = np.repeat(rng.random(20) < 0.6, 5)
    clusters = tuple(str(i // 5) for i in range(100))
    clustered = compute_metrics(CALIBRATION, binary(confidence, correct, clusters=clusters, cluster_by="story"),
                                n_boot=400, seed=2)
    documents = compute_metrics(CALIBRATION, binary(confidence, correct), n_boot=400, seed=2)
    # the same quantiles, by a loop over the cluster resamples
    resampled = [expected_calibration_error(confidence[idx], correct[idx])
                 for block in cluster_bootstrap_chunks(clusters, 400, 2) for idx in block]
    assert (clustered["ece"].low, clustered["ece"].high) == pytest.approx(
        tuple(np.quantile(resampled, [0.025, 0.975])), abs=1e-12)
    assert "over 20 clusters (field story) of 100 documents" in clustered["brier"].definition
    for name in CALIBRATION:
        c, d = clustered[name], documents[name]
        assert c.value == pytest.approx(d.value, abs=1e-12)
        assert c.high - c.low > 1.3 * (d.high - d.low)  # five copies of each document are not five documents


def test_paired_comparison_of_calibration():
    a = binary([0.95] * 60, pattern(60, 30))
    b = binary([0.55] * 60, pattern(60, 33))
    test = paired_test("ece", a, b, n_boot=300)
    assert test.test == "paired bootstrap" and test.diff == pytest.approx(0.45 - 0.0, abs=1e-12)
    assert test.low <= test.diff <= test.high and test.p_value < 0.01


# ------------------------------------------------------------------------------------------ which runs get them
def test_metrics_for_adds_calibration_where_there_are_probabilities():
    assert metrics_for(["accuracy"], "loglikelihood") == ["accuracy", "ece", "brier"]
    assert metrics_for(["accuracy", "brier"], "classifier") == ["accuracy", "brier", "ece"]
    generated = metrics_for(["accuracy", "ece"], "generation")
    assert "ece" not in generated and "brier" not in generated and "unparseable_rate" in generated


class Scorer:
    """Log-likelihoods [0, -1, -2] rotated so that document i prefers choice i % 3."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        return [tuple(ContinuationScore(-float((k - i) % 3), k == i % 3, 1) for k in range(len(r.continuations)))
                for i, r in enumerate(requests)]

    def generate(self, requests, progress=None):
        return ["Answer: True"] * len(requests)


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


def test_a_log_likelihood_run_records_ece_and_brier(tmp_path, byte_tok):
    run = evaluate("scripted", "gen_deduction", engine=Scorer(byte_tok), prompts="plain", limit=30, output=tmp_path,
                   progress=False, n_boot=100)
    [ev] = read_run(run.path)["evaluations"]
    assert ev["main_metric"] == "accuracy" and list(ev["metrics"])[-2:] == CALIBRATION
    gold = [json.loads(line)["gold"] for line in (run.path / "samples.jsonl").read_text().splitlines()]
    e0, e1, e2 = math.exp(0), math.exp(-1), math.exp(-2)
    top, second, third = e0 / (e0 + e1 + e2), e1 / (e0 + e1 + e2), e2 / (e0 + e1 + e2)
    right = [g == i % 3 for i, g in enumerate(gold)]
    # gold is the top, the second (k = i+1) or the third choice (k = i+2) of the rotation
    brier = [(1 - top) ** 2 + second**2 + third**2 if g == i % 3 else
             top**2 + (1 - second) ** 2 + third**2 if g == (i + 1) % 3 else top**2 + second**2 + (1 - third) ** 2
             for i, g in enumerate(gold)]
    assert ev["metrics"]["ece"]["value"] == pytest.approx(abs(np.mean(right) - top), abs=1e-12)
    assert ev["metrics"]["brier"]["value"] == pytest.approx(np.mean(brier), abs=1e-12)
    for name in CALIBRATION:
        m = ev["metrics"][name]
        assert m["low"] <= m["value"] <= m["high"] and "100 resamples" in m["definition"]


def test_a_generation_run_has_no_calibration(tmp_path, byte_tok):
    run = evaluate("scripted", "gen_deduction", engine=Scorer(byte_tok), prompts="cot", limit=6, output=tmp_path,
                   progress=False, n_boot=20)
    [ev] = read_run(run.path)["evaluations"]
    assert ev["method"] == "generation" and "accuracy" in ev["metrics"]
    assert not set(CALIBRATION) & set(ev["metrics"])


# ------------------------------------------------------------------------------------------ the report
class Sections(HTMLParser):
    """The report's navigation links, and per section its headings, table cells and images."""

    def __init__(self):
        super().__init__()
        self.nav, self.sections, self.current, self.tag = [], {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.nav.append(attrs["href"][1:])
        if tag == "section":
            self.current = self.sections.setdefault(attrs["id"], {"h3": [], "td": [], "img": [], "p": []})
        elif self.current is not None and tag in ("h3", "td", "p"):
            self.tag = tag
            self.current[tag].append("")
        elif self.current is not None and tag == "img":
            self.current["img"].append(attrs)

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        if tag == self.tag:
            self.tag = None

    def handle_data(self, data):
        if self.current is not None and self.tag:
            self.current[self.tag][-1] += data


def parsed(page: Path) -> Sections:
    parser = Sections()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def calibrated(task: str, variant: str, right: int, confidence_step: float) -> tuple[dict, list[dict]]:
    """An evaluation of 40 two-choice documents, scored with ece and brier as a run scores them."""
    docs = samples(task, variant, pattern(40, right), prompt="Q {i}?")
    for i, s in enumerate(docs):
        s["logprobs"][s["pred"]] = -3.0 + confidence_step * (1 + i % 4)
    ev = evaluation(task, variant, docs)
    preds = predictions([Outcome.of(Sample.from_dict(s)) for s in docs], ("no", "yes"), None)
    ev["metrics"].update({k: v.to_dict() for k, v in compute_metrics(CALIBRATION, preds, n_boot=200).items()})
    return ev, docs


def test_report_calibration_section_and_reliability_diagrams(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "m1", [calibrated("t_logic", "plain", 30, 0.5), calibrated("t_common", "plain", 20, 1.0)])
    generated = samples("t_gen", "cot", pattern(40, 25))
    for s in generated:
        s.pop("logprobs")
        s.update(generation="Answer: yes", extracted="yes")
    scored = evaluation("t_gen", "cot", generated, metrics=("accuracy", "unparseable_rate"))
    write_run(runs, "m2", [(scored, generated)])
    assert main(["report", str(runs), "--output", str(tmp_path / "out")]) == 0
    page = parsed(tmp_path / "out" / "index.html")
    assert "calibration" in page.nav
    section = page.sections["calibration"]
    assert section["h3"] == ["m1 · zero-shot · plain"]  # m2 generated its answers: it has no probabilities
    [diagram] = section["img"]
    assert diagram["src"].startswith("data:image/png;base64,")
    assert diagram["alt"] == "Reliability diagram of m1 · zero-shot · plain"
    stored = json.loads(next(runs.glob("*m1*/results.json")).read_text())["evaluations"]
    cells = [c.strip() for c in section["td"]]
    for ev in stored:
        row = cells[cells.index(ev["task"]):][:6]
        assert row[1] == "40" and float(row[2]) == pytest.approx(ev["metrics"]["accuracy"]["value"], abs=5e-4)
        for cell, name in zip(row[4:], CALIBRATION):
            m = ev["metrics"][name]
            assert cell == f"{m['value']:.3f}[{m['low']:.3f}, {m['high']:.3f}]"
    assert any("10 equal-width confidence bins" in p for p in section["p"])


def test_report_without_log_likelihood_evaluations_says_so(tmp_path):
    docs = samples("t_logic", "plain", pattern(20, 12))
    write_run(tmp_path / "runs", "m1", [(evaluation("t_logic", "plain", docs), docs)])  # scored before calibration
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]) == 0
    section = parsed(tmp_path / "out" / "index.html").sections["calibration"]
    assert not section["img"] and not section["td"]
    [note] = section["p"]
    assert note.startswith("No log-likelihood evaluation in these runs records its calibration")
