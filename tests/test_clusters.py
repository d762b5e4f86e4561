"""Clustered intervals: a task's cluster field, recorded per sample, and bootstraps that resample whole clusters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evalsuite.errors import MetricError, SpecError, TemplateError
from evalsuite.results.records import EvaluationRecord, Outcome, Sample, predictions
from evalsuite.scoring import Predictions, compute_metrics
from evalsuite.scoring.metrics import bootstrap_chunks, cluster_bootstrap_chunks
from evalsuite.scoring.stats import paired_bootstrap, paired_test

LABELS = ("no", "yes")


def _preds(correct, clusters=None, cluster_by=None) -> Predictions:
    gold = np.arange(len(correct)) % 2
    pred = np.where(np.asarray(correct, dtype=bool), gold, 1 - gold)
    return Predictions(pred=pred, gold=gold, n_classes=2, labels=LABELS, clusters=clusters, cluster_by=cluster_by)


def test_cluster_resamples_hold_whole_clusters_and_are_seeded():
    keys = ["a", "a", "b", "c", "c", "c", "d"]
    rows = [row for block in cluster_bootstrap_chunks(keys, 300, seed=3) for row in block]
    again = [row for block in cluster_bootstrap_chunks(keys, 300, seed=3) for row in block]
    assert len(rows) == 300 and all(np.array_equal(x, y) for x, y in zip(rows, again))
    members = {k: {i for i, key in enumerate(keys) if key == k} for k in set(keys)}
    for row in rows:
        drawn = [keys[i] for i in row]
        counts = {k: drawn.count(k) for k in set(drawn)}
        # each cluster drawn m times contributes each of its documents m times, and 4 clusters are drawn
        assert all(sorted(row[np.isin(row, list(members[k]))]) == sorted(list(members[k]) * (c // len(members[k])))
                   for k, c in counts.items())
        assert sum(c // len(members[k]) for k, c in counts.items()) == 4
    assert len({len(row) for row in rows}) > 1  # sizes vary with the clusters drawn


def test_copies_in_a_cluster_give_the_interval_of_one_copy():
    """Five identical documents per cluster carry the information of one: the clustered interval of the copies
    is the document interval of the distinct documents (the same draws of the same stream)."""
    rng = np.random.default_rng(0)
    distinct = rng.random(40) < 0.6
    keys = [f"story{k:02d}" for k in range(40)]  # sorted as the documents: cluster k is document k
    copies = _preds(np.repeat(distinct, 5), tuple(np.repeat(keys, 5)), "story_id")
    clustered = compute_metrics(["accuracy"], copies, n_boot=500, seed=4)["accuracy"]
    single = compute_metrics(["accuracy"], _preds(distinct), n_boot=500, seed=4)["accuracy"]
    naive = compute_metrics(["accuracy"], _preds(np.repeat(distinct, 5)), n_boot=500, seed=4)["accuracy"]
    assert (clustered.value, clustered.low, clustered.high) == pytest.approx((single.value, single.low, single.high))
    assert naive.high - naive.low < 0.6 * (clustered.high - clustered.low)  # ignoring clusters: far too narrow
    assert ("percentile bootstrap over 40 clusters (field story_id) of 200 documents, whole clusters drawn with "
            "replacement, 500 resamples, seed 4") in clustered.definition
    assert "over documents, 500 resamples" in single.definition


def test_every_metric_takes_resamples_of_varying_size():
    rng = np.random.default_rng(1)
    n = 90
    gold = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.5, gold, rng.integers(-1, 3, n))
    keys = tuple(f"p{k}" for k in rng.integers(0, 25, n))
    preds = Predictions(pred=pred, gold=gold, n_classes=3, labels=("a", "b", "c"), clusters=keys)
    flat = Predictions(pred=pred, gold=gold, n_classes=3, labels=("a", "b", "c"))
    for name in ("accuracy", "f1_macro", "mcc", "unparseable_rate"):
        got, plain = compute_metrics([name], preds, n_boot=200)[name], compute_metrics([name], flat, n_boot=200)[name]
        assert got.value == plain.value and got.low <= got.value <= got.high
        assert f"over {len(set(keys))} clusters of 90 documents" in got.definition


def test_cluster_keys_are_checked():
    with pytest.raises(MetricError, match="clusters has 2 entries but gold has 3"):
        _preds([1, 0, 1], ("a", "b"))
    with pytest.raises(MetricError, match="one string key per document"):
        _preds([1, 0, 1], (1, 2, 3))


def test_paired_test_resamples_clusters_and_drops_mcnemar():
    rng = np.random.default_rng(2)
    a_ok, b_ok = rng.random(30) < 0.7, rng.random(30) < 0.5
    keys = tuple(np.repeat([f"s{k:02d}" for k in range(30)], 4))
    a, b = (_preds(np.repeat(x, 4), keys, "story_id") for x in (a_ok, b_ok))
    test = paired_test("accuracy", a, b, n_boot=400, seed=1)
    assert test.test == "paired cluster bootstrap" and test.only_a is None and test.only_b is None
    assert (test.diff, test.low, test.high, test.p_value) == pytest.approx(
        paired_bootstrap("accuracy", a, b, n_boot=400, seed=1))
    # four copies of each document: the interval of the 30 distinct pairs, drawn from the same stream
    _, low, high, _ = paired_bootstrap("accuracy", _preds(a_ok), _preds(b_ok), n_boot=400, seed=1)
    assert (test.low, test.high) == pytest.approx((low, high))
    assert "30 clusters (field story_id) of 120 documents" in test.definition and "no McNemar" in test.definition
    plain = paired_test("accuracy", _preds(np.repeat(a_ok, 4)), _preds(np.repeat(b_ok, 4)), n_boot=400, seed=1)
    assert plain.test == "exact McNemar" and plain.high - plain.low < test.high - test.low
    # one side without keys (an older run) follows the other's clusters
    one_sided = paired_test("accuracy", _preds(np.repeat(a_ok, 4)), b, n_boot=400, seed=1)
    assert (one_sided.low, one_sided.high, one_sided.test) == (test.low, test.high, test.test)


def test_paired_sides_must_agree_on_clusters():
    a = _preds([1, 0, 1, 1], ("x", "x", "y", "y"))
    b = _preds([1, 1, 0, 1], ("x", "y", "y", "y"))
    with pytest.raises(MetricError, match="different clusters"):
        paired_test("accuracy", a, b, n_boot=50)


def test_document_bootstrap_is_unchanged_without_clusters():
    """Without cluster keys the resamples are the document bootstrap's, draw for draw."""
    from evalsuite.scoring.metrics import resamples

    preds = _preds(np.arange(50) % 3 == 0)
    got = np.concatenate(list(resamples(preds, 300, 9)))
    assert np.array_equal(got, np.concatenate(list(bootstrap_chunks(50, 300, 9))))


def test_samples_record_clusters_and_predictions_carry_them():
    sample = Sample(task="t", variant="plain", doc_id=0, fewshot_ids=(), choices=(" no", " yes"), pred=1, gold=1,
                    gold_text="yes", cluster="story7")
    line = sample.to_dict()
    assert line["cluster"] == "story7" and list(line)[-1] == "cluster"
    assert "cluster" not in Sample(**{**sample.__dict__, "cluster": None}).to_dict()
    preds = predictions([Outcome.of(Sample.from_dict(line))] * 3, LABELS, None, cluster_by="story_id")
    assert preds.clusters == ("story7",) * 3 and preds.cluster_by == "story_id"
    unkeyed = Outcome.of(Sample(**{**sample.__dict__, "cluster": None}))
    assert predictions([unkeyed], LABELS, None, cluster_by="story_id").clusters is None
    record = dict(task="t", category="logical", variant="plain", method="loglikelihood", split="test", n=1,
                  main_metric="accuracy", metrics={}, confusion={}, hashes={}, origin="o", license=None, timing_s=1.0,
                  docs_per_s=None, labels=LABELS, positive=None)
    assert "cluster" not in EvaluationRecord(**record).to_dict()
    assert EvaluationRecord(**record, cluster="story_id").to_dict()["cluster"] == "story_id"


def _task_file(folder: Path, cluster: str) -> Path:
    (folder / "prompts" / "tiny").mkdir(parents=True)
    (folder / "prompts" / "tiny" / "plain.jinja").write_text("{{ text }}\nAnswer:")
    (folder / "docs.jsonl").write_text("".join(
        f'{{"text": "q{i}", "label": {i % 2}, "story": {i // 3}, "passage": "{"long passage " * 8}{i // 2}"}}\n'
        for i in range(6)))
    path = folder / "tiny.yaml"
    path.write_text("name: tiny\ncategory: logical\nsource:\n  local:\n    format: jsonl\n    splits: {test: docs.jsonl}\n"
                    f"splits: {{eval: test}}\nlabels: [\"no\", \"yes\"]\nchoices: '[\"no\", \"yes\"]'\ntarget: label\n"
                    f"cluster: {cluster}\nprompts: [plain]\nmetrics: [accuracy]\n")
    return path


def test_task_names_a_cluster_expression_rendered_per_document(tmp_path):
    from evalsuite.data import load_split
    from evalsuite.prompting.render import PromptRenderer
    from evalsuite.spec.task import load_task

    task = load_task(_task_file(tmp_path, "story"), [tmp_path / "prompts"])
    assert task.cluster == "story"
    docs = load_split(task, "test", tmp_path).docs
    renderer = PromptRenderer(task, task.prompts[0])
    assert [renderer.render(d, i).cluster for i, d in enumerate(docs)] == ["0", "0", "0", "1", "1", "1"]

    long = load_task(_task_file(tmp_path / "long", "passage"), [tmp_path / "long" / "prompts"])
    keys = [PromptRenderer(long, long.prompts[0]).cluster_of(d, i) for i, d in enumerate(docs)]
    assert len(set(keys)) == 3 and all(k.startswith("sha256:") and len(k) == 23 for k in keys)

    empty = load_task(_task_file(tmp_path / "none", "missing_field | default('')"), [tmp_path / "none" / "prompts"])
    with pytest.raises(TemplateError, match="field 'cluster' gives no value on document 0"):
        PromptRenderer(empty, empty.prompts[0]).cluster_of(docs[0], 0)
    with pytest.raises(SpecError, match="field 'cluster': invalid Jinja expression"):
        load_task(_task_file(tmp_path / "bad", "story +"), [tmp_path / "bad" / "prompts"])


def test_run_and_compare_resample_folio_stories(tmp_path, data_dir):
    """A run of folio records each document's story and states its clustered intervals; comparing two runs
    resamples the same stories."""
    from test_pipeline import ScriptedEngine
    from tiny_models import byte_tokenizer

    from evalsuite.api import evaluate
    from evalsuite.leaderboard.compare import compare, parse_side, render_text
    from evalsuite.results import read_run, read_samples

    runs = []
    for gold in ([0] * 40, [1] * 40):
        engine = ScriptedEngine(byte_tokenizer(), gold)
        runs.append(evaluate("scripted", "folio", engine=engine, prompts=["plain"], limit=40, data_dir=data_dir,
                             output=tmp_path / f"run{gold[0]}", progress=False))
    [ev] = read_run(runs[0].path)["evaluations"]
    samples = read_samples(runs[0].path)
    stories = len({s["cluster"] for s in samples})
    assert ev["cluster"] == "premises" and 5 < stories < 40
    assert f"over {stories} clusters (field premises) of 40 documents" in ev["metrics"]["accuracy"]["definition"]

    result = compare(parse_side(str(runs[0].path)), parse_side(str(runs[1].path)), n_boot=300)
    [row] = result.rows
    assert row.test.test == "paired cluster bootstrap"
    assert f"{stories} clusters (field premises) of 40 documents" in row.test.definition
    assert "Clustered tasks (folio)" in render_text(result)


def test_accuracy_by_group_resamples_the_clusters_of_each_group():
    from evalsuite.scoring import accuracy_by_group

    correct = np.tile([True, True, False, False, True, False], 10)
    keys = tuple(f"s{i // 3}" for i in range(60))
    groups = [i % 2 for i in range(60)]  # each story has documents in both groups
    by = accuracy_by_group(_preds(correct, keys), groups, n_boot=300, seed=2)
    for level in (0, 1):
        index = np.array([i for i in range(60) if groups[i] == level])
        alone = compute_metrics(["accuracy"], _preds(correct[index], tuple(keys[i] for i in index)), n_boot=300,
                                seed=2)["accuracy"]
        assert (by[str(level)]["low"], by[str(level)]["high"]) == (alone.low, alone.high)
