"""Repeated few-shot draws (``--fewshot-draws``), explicit sampling seeds (``--seeds``) and the metrics of several
sampled answers (``avg@k``, ``maj@k``, ``pass@k``)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from test_chunks import ContentEngine
from test_self_consistency import SCRIPT, ScriptedSampler

from evalsuite.api import evaluate, load_tasks
from evalsuite.cli import main
from evalsuite.data import load_split
from evalsuite.errors import SpecError
from evalsuite.leaderboard.compare import compare, parse_side, render_text
from evalsuite.results import read_samples
from evalsuite.results.records import Outcome, predictions
from evalsuite.scoring import Predictions, compute_metrics
from evalsuite.scoring.metrics import pass_at_k

MC = dict(tasks="copa", shots=2, limit=12, n_boot=200, seed=3)
# What two runs of one configuration may differ in: their identity and time, and the time the work took.
RUN_SPECIFIC = {"run_id", "created", "timings", "cache"}
EVALUATION_SPECIFIC = {"timing_s", "docs_per_s"}


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


def _run(tmp_path, data_dir, byte_tok, folder, **options):
    options = {**MC, "cache": False, **options}
    return evaluate("scripted", engine=ContentEngine(byte_tok), data_dir=data_dir, output=tmp_path / folder,
                    progress=False, **options)


def _without(record: dict, run_keys: set[str], evaluation_keys: set[str]) -> dict:
    out = {k: v for k, v in record.items() if k not in run_keys}
    out["evaluations"] = [{k: v for k, v in ev.items() if k not in evaluation_keys} for ev in record["evaluations"]]
    return out


def test_one_draw_is_the_run_without_draws(tmp_path, data_dir, byte_tok):
    plain = _run(tmp_path, data_dir, byte_tok, "plain")
    one = _run(tmp_path, data_dir, byte_tok, "one", fewshot_draws=1)
    assert (one.path / "samples.jsonl").read_bytes() == (plain.path / "samples.jsonl").read_bytes()
    assert _without(one.record, RUN_SPECIFIC, EVALUATION_SPECIFIC) == _without(
        plain.record, RUN_SPECIFIC, EVALUATION_SPECIFIC)
    assert "fewshot_draws" not in one.record["config"] and "fewshot_draws" not in one.record["evaluations"][0]
    assert one.record["run_id"][-8:] == plain.record["run_id"][-8:]  # the same configuration digest


def test_each_document_is_answered_once_per_draw(tmp_path, data_dir, byte_tok):
    one = _run(tmp_path, data_dir, byte_tok, "one")
    three = _run(tmp_path, data_dir, byte_tok, "three", fewshot_draws=3, cache=True)
    samples = read_samples(three.path)
    assert [(s["doc_id"], s["draw"]) for s in samples] == [(i, k) for i in range(12) for k in range(3)]
    assert list(samples[0])[:5] == ["task", "variant", "doc_id", "draw", "fewshot_ids"]
    for i in range(12):  # each draw its own examples
        assert len({tuple(s["fewshot_ids"]) for s in samples[3 * i: 3 * i + 3]}) == 3
    # Draw 0 is the run without draws, sample for sample.
    assert [{k: v for k, v in s.items() if k != "draw"} for s in samples if s["draw"] == 0] == read_samples(one.path)

    [ev] = three.record["evaluations"]
    correct = np.array([s["correct"] for s in samples], dtype=float).reshape(12, 3)  # documents × draws
    accuracy = ev["metrics"]["accuracy"]
    assert accuracy["value"] == pytest.approx(correct.mean(axis=1).mean())
    assert "percentile bootstrap over documents, each with its 3 few-shot draws (12 documents" in accuracy["definition"]
    assert ev["n"] == 12 and ev["fewshot_draws"] == 3 and three.record["config"]["fewshot_draws"] == 3
    assert sum(sum(row.values()) for row in ev["confusion"].values()) == 36
    by_draw = ev["by_draw"]
    assert by_draw["metric"] == "accuracy" and by_draw["values"] == pytest.approx(list(correct.mean(axis=0)))
    assert by_draw["range"] == pytest.approx(np.ptp(correct.mean(axis=0)))
    assert by_draw["sd"] == pytest.approx(np.std(correct.mean(axis=0), ddof=1))
    assert by_draw["values"][0] == pytest.approx(one.metric("copa", "accuracy"))

    # The request cache keys each draw's prompt apart: 36 requests, none shared; a rerun answers from it.
    assert (three.record["cache"]["requests"], three.record["cache"]["computed"]) == (36, 36)
    again = _run(tmp_path, data_dir, byte_tok, "again", fewshot_draws=3, cache=True)
    assert again.record["cache"]["hits"] == 36 and read_samples(again.path) == samples


def test_fixed_sampler_draws_one_set_per_draw(tmp_path, data_dir, byte_tok):
    run = _run(tmp_path, data_dir, byte_tok, "fixed", fewshot_draws=3, fewshot_sampler="fixed", limit=4)
    sets = [{tuple(s["fewshot_ids"]) for s in read_samples(run.path) if s["draw"] == k} for k in range(3)]
    assert all(len(shared) == 1 for shared in sets)  # every document of a draw shares its examples
    assert len(set().union(*sets)) == 3  # and the draws differ


def test_intervals_resample_documents_with_their_draws():
    rng = np.random.default_rng(7)
    gold = rng.integers(0, 2, 40)
    pred = np.where(rng.random(40) < 0.7, gold, 1 - gold)
    keys = [f"doc{i:02d}" for i in range(40)]
    single = Predictions(pred, gold, 2, ("a", "b"), clusters=tuple(keys))  # each document its own cluster
    copies = predictions([Outcome(int(p), int(g), None, "", "", None, None, document=key, draw=k)
                          for p, g, key in zip(pred, gold, keys) for k in range(3)], ("a", "b"), None)
    rows = Predictions(copies.pred, copies.gold, 2, ("a", "b"))  # the rows as if independent documents
    names = ["accuracy", "f1_macro"]
    a, b, c = (compute_metrics(names, p, n_boot=500, seed=1) for p in (single, copies, rows))
    for name in names:
        # Three identical draws add no information: the interval is the single draw's, not narrower.
        assert (b[name].value, b[name].low, b[name].high) == pytest.approx((a[name].value, a[name].low, a[name].high))
        assert c[name].high - c[name].low < 0.8 * (a[name].high - a[name].low)
    assert "documents, each with its 3 few-shot draws (40 documents, whole documents drawn" in b["accuracy"].definition

    # With the task's clusters, whole clusters are resampled, each document with its draws.
    clustered = predictions([Outcome(int(p), int(g), None, "", "", None, None, cluster=f"s{i // 4}", document=key,
                                     draw=k) for i, (p, g, key) in enumerate(zip(pred, gold, keys)) for k in range(2)],
                            ("a", "b"), None, cluster_by="story")
    definition = compute_metrics(["accuracy"], clustered, n_boot=50)["accuracy"].definition
    assert "10 clusters (field story) of 40 documents, each document with its 2 few-shot draws" in definition


def test_pass_at_k_estimator():
    assert float(pass_at_k(5, 2, 2)) == pytest.approx(1 - 3 / 10)  # 1 - C(3, 2) / C(5, 2)
    assert float(pass_at_k(10, 3, 4)) == pytest.approx(1 - 35 / 210)  # 1 - C(7, 4) / C(10, 4)
    assert list(pass_at_k(5, [0, 1, 4, 5], 5)) == [0.0, 1.0, 1.0, 1.0]  # k = n: any correct
    for n in range(1, 8):
        for k in range(1, n + 1):
            estimates = pass_at_k(n, np.arange(n + 1), k)
            for c in range(n + 1):  # the share of k-subsets of the n answers (the first c correct) with a correct one
                subsets = list(itertools.combinations(range(n), k))
                assert estimates[c] == pytest.approx(sum(min(s) < c for s in subsets) / len(subsets), abs=1e-12)


def test_seeds_and_sampled_metrics(tmp_path, byte_tok):
    engine = ScriptedSampler(byte_tok, SCRIPT)
    run = evaluate("scripted", "gen_deduction", engine=engine, prompts="cot", limit=5, seeds="11,22,33",
                   temperature=0.7, output=tmp_path, progress=False, n_boot=100)
    assert [r.seed for r in engine.requests] == [11, 22, 33] * 5
    assert (run.record["config"]["samples"], run.record["config"]["seeds"]) == (3, [11, 22, 33])
    task = load_tasks()["gen_deduction"]
    gold = [["True", "False", "Unknown"].index(d["label"]) for d in load_split(task, "test").docs[:5]]
    # Each generation's strict reading (see SCRIPT): True/False/Unknown = 0/1/2, unparseable -1.
    read = [[0, 0, 1], [-1, -1, 1], [-1, -1, -1], [1, 0, -1], [0, 0, 2]]
    samples = read_samples(run.path)
    assert [s["seeds"] for s in samples] == [[11, 22, 33]] * 5
    assert [s["correct_samples"] for s in samples] == [[p == g for p in preds] for preds, g in zip(read, gold)]

    [ev] = run.record["evaluations"]
    correct = np.array([[p == g for p in preds] for preds, g in zip(read, gold)])
    metrics = ev["metrics"]
    assert metrics["avg@k"]["value"] == pytest.approx(correct.mean())
    assert metrics["pass@k"]["value"] == pytest.approx(correct.any(axis=1).mean())
    assert metrics["maj@k"]["value"] == metrics["accuracy"]["value"]
    for name in ("avg@k", "maj@k", "pass@k"):
        assert "k = " in metrics[name]["definition"] and "3 sampled answers" in metrics[name]["definition"]
        assert metrics[name]["low"] <= metrics[name]["value"] <= metrics[name]["high"]
    assert ev["main_metric"] == "accuracy" and ev["self_consistency"]["samples"] == 3

    # Without --seeds sample k has seed seed * 1000 + k, recorded too; greedy generations record no seed.
    default = evaluate("scripted", "gen_deduction", engine=ScriptedSampler(byte_tok, SCRIPT), prompts="cot", limit=5,
                       samples=3, seed=2, temperature=0.7, output=tmp_path, progress=False, n_boot=20)
    assert {tuple(s["seeds"]) for s in read_samples(default.path)} == {(2000, 2001, 2002)}
    greedy = evaluate("scripted", "gen_deduction", engine=ScriptedSampler(byte_tok, [[s[0]] for s in SCRIPT]),
                      prompts="cot", limit=5, output=tmp_path, progress=False, n_boot=20)
    assert not any("seeds" in s or "correct_samples" in s for s in read_samples(greedy.path))
    assert "avg@k" not in greedy.record["evaluations"][0]["metrics"]


@pytest.mark.parametrize("options, message", [
    (dict(fewshot_draws=3), "--fewshot-draws 3 needs few-shot examples"),
    (dict(fewshot_draws=0, shots=2), "--fewshot-draws must be at least 1"),
    (dict(seeds="1,x", temperature=0.7), "--seeds 1,x: expected distinct integers"),
    (dict(seeds="", temperature=0.7), "--seeds : expected"),
    (dict(seeds="4,4", temperature=0.7), "--seeds 4,4: expected distinct"),
    (dict(seeds="-1", temperature=0.7), "--seeds -1"),
    (dict(seeds="1,2,3", samples=2, temperature=0.7), "leave out --samples or make it 3"),
    (dict(seeds="5"), "needs --temperature above 0"),
    (dict(shots=2, fewshot_draws=2, fewshot_sampler="first"), "the 'first' sampler always takes"),
])
def test_bad_options_stop_before_the_model_loads(options, message, tmp_path):
    with pytest.raises(SpecError, match=message):
        evaluate(str(tmp_path / "no-such-model"), "copa", output=tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_cli_names_the_option(tmp_path, capsys):
    assert main(["run", "--model", str(tmp_path / "no-such-model"), "--tasks", "copa", "--fewshot-draws", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalsuite: error: --fewshot-draws 2 needs few-shot examples") and "\n" not in err


def test_compare_pairs_documents_and_draws(tmp_path, data_dir, byte_tok):
    a = _run(tmp_path, data_dir, byte_tok, "a", fewshot_draws=3)
    b = _run(tmp_path, data_dir, byte_tok, "b", fewshot_draws=3, seed=4)
    one = _run(tmp_path, data_dir, byte_tok, "one")
    [same] = compare(parse_side(str(a.path)), parse_side(str(b.path)), n_boot=200).rows
    assert same.paired_by == "doc_hash and draw" and same.test.n == 36 and not same.only_in_a + same.only_in_b
    assert same.test.test == "paired cluster bootstrap" and "each with its 3 few-shot draws" in same.test.definition
    # One draw against three: draw 0 pairs, the others are listed as unpaired.
    result = compare(parse_side(str(a.path)), parse_side(str(one.path)), n_boot=200)
    [mixed] = result.rows
    assert mixed.test.n == 12 and mixed.test.test == "exact McNemar"
    assert len(mixed.only_in_a) == 24 and {draw for _, draw in mixed.only_in_a} == {1, 2}
    values = [s["correct"] for s in read_samples(a.path) if s["draw"] == 0]
    assert mixed.test.value_a == pytest.approx(np.mean(values))
    assert "content hash (doc_hash) and few-shot draw" in render_text(result)


def test_report_counts_documents_once(tmp_path, data_dir, byte_tok):
    run = _run(tmp_path, data_dir, byte_tok, "runs", fewshot_draws=2, prompts="plain,lettered", limit=6)
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert '<div class="k">Documents scored</div><div class="v">12</div>' in page  # 6 documents × 2 variants
    assert "· few-shot draw " in page  # wrong answers name their draw
    record = json.loads((run.path / "results.json").read_text())
    assert [ev["n"] for ev in record["evaluations"]] == [6, 6]


def test_real_model_draws(tmp_path, data_dir, hf_smollm2):
    """SmolLM2: draw 0 is the run without draws (log-likelihoods up to the last digits that batching moves)."""
    options = dict(engine=hf_smollm2, shots=2, limit=2, data_dir=data_dir, output=tmp_path, progress=False,
                   cache=False, n_boot=100)
    one = read_samples(evaluate("smollm2", "copa", **options).path)
    run = evaluate("smollm2", "copa", fewshot_draws=3, **options)
    samples = read_samples(run.path)
    first = [s for s in samples if s["draw"] == 0]
    assert [(s["prompt"], s["pred"]) for s in first] == [(s["prompt"], s["pred"]) for s in one]
    for drawn, alone in zip(first, one):
        assert drawn["logprobs"] == pytest.approx(alone["logprobs"], abs=1e-3)
    assert all(len({s["prompt"] for s in samples if s["doc_id"] == i}) == 3 for i in range(2))
    [ev] = run.record["evaluations"]
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(np.mean([s["correct"] for s in samples]))
    assert ev["by_draw"]["values"][0] == pytest.approx(np.mean([s["correct"] for s in one]))
